"""The model spec: everything about one model, and each backend's settings."""
