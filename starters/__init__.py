"""Clients: the `retrain` CLI, the Python client API, the demo scenario, the dev server."""
