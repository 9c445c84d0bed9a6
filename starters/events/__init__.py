"""Cloud event shapes mapped to trigger events (pure functions; the gateway delivers them)."""
