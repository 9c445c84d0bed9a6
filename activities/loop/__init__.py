"""The RetrainingLoop's activities: data window, golden set, training, registry, evaluation,
audit."""
