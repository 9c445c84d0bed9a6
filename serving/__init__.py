"""The local prediction endpoint (`retrain serve MODEL`)."""
