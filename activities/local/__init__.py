"""The local backend (the embedded default): scikit-learn training in a subprocess, an MLflow
registry, the local endpoint (`retrain serve`) and its capture, an outbox for notifications."""
