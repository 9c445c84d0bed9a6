"""The DriftMonitor's activities: reference profiles, drift checks and their reports."""
