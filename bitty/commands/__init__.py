"""The commands behind the CLI, one module each."""
