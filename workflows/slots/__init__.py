"""TrainingSlots: the global limit of concurrent trainings, and a loop's lease on a slot."""
