"""Worker process entrypoints."""
