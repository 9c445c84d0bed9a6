"""The azure backend: Azure Machine Learning, Azure Monitor, Blob Storage and Event Grid."""
