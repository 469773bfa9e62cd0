"""Agent SRE: circuit breakers, SLOs and error budgets, anomalies, cascades, replay.

The specification is docs/sre.md.
"""
