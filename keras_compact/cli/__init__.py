"""The `keras-compact` command-line interface."""
