"""The TrainingSlots limiter's activities."""
