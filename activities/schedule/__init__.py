"""The ScheduledTrigger's activities."""
