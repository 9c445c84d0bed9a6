"""The ModelCoordinator's activities."""
