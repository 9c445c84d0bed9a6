"""Fault injection over full retraining loops: `make chaos` (see __main__.py)."""
