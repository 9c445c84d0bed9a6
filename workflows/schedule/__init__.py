"""ScheduledTrigger: what a model's Temporal Schedule starts at each scheduled time."""
