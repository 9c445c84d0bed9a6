"""Rich output of the CLI, one module per command group."""
