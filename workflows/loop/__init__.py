"""RetrainingLoop: one retraining, from the data window to the audit record."""
