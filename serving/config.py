"""What one endpoint process serves and how it captures: `retrain serve MODEL` builds one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workflows.common.names import validate_model_name


@dataclass(frozen=True)
class EndpointConfig:
    """Settings of the local prediction endpoint for one model.

    `home` is the retrain home (specs, registry, endpoint state, capture files); `seed` makes
    the weighted routing reproducible (None: seeded from the OS).
    """

    home: Path
    model: str
    # Capture rows are written when this many accumulate, or every `capture_flush_seconds`.
    capture_batch_rows: int = 1000
    capture_flush_seconds: float = 5.0
    # /invocations bodies; feedback and admin bodies may carry up to 10,000 labels.
    max_body_bytes: int = 64 * 1024
    max_feedback_body_bytes: int = 4 * 1024 * 1024
    # Request ids remembered in memory for feedback; older ones are found in capture files.
    feedback_index_size: int = 100_000
    # How far back feedback looks for request ids in the capture files.
    feedback_lookback_days: int = 7
    seed: int | None = None
    # Model calls running at once; more wait for a slot before their latency clock starts.
    model_threads: int = 1
    # The bearer token of /admin/* (None: RETRAIN_ENDPOINT_ADMIN_TOKEN, else the token file
    # under home, created at the first start; activities/local/endpoint.py).
    admin_token: str | None = None

    def __post_init__(self) -> None:
        validate_model_name(self.model)
        positive = {
            "capture_batch_rows": self.capture_batch_rows,
            "capture_flush_seconds": self.capture_flush_seconds,
            "max_body_bytes": self.max_body_bytes,
            "max_feedback_body_bytes": self.max_feedback_body_bytes,
            "feedback_index_size": self.feedback_index_size,
            "feedback_lookback_days": self.feedback_lookback_days,
            "model_threads": self.model_threads,
        }
        if wrong := [name for name, value in positive.items() if not value > 0]:
            raise ValueError(f"endpoint settings must be positive: {', '.join(wrong)}")

    @property
    def state_file(self) -> Path:
        """The persisted weights: `<home>/endpoints/<model>/state.json`."""
        return self.home / "endpoints" / self.model / "state.json"
