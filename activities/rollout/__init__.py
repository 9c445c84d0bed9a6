"""The StagedRollout's activities: traffic shifts and the canary analysis."""
