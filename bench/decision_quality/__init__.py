"""The decision-quality benchmark: `python -m bench.decision_quality` (see `__main__`)."""
