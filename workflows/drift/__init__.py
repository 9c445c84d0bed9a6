"""DriftMonitor: periodic checks of captured traffic, reported to the coordinator."""
