"""ModelCoordinator: one entity workflow per model that decides when to retrain."""
