"""Supply chain and posture: deployment manifests, signed AI-BOMs and policy bundles, the
start-up gate, doctor and threat scenarios (docs/supply-chain.md)."""
