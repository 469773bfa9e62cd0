"""Two `warden serve` replicas on PostgreSQL and Redis: `make demo-fleet`, and the fleet harness."""
