"""`make demo`: the synthetic data, live traffic and the scenario."""
