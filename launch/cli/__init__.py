"""The `mnist-dist` command: its parser and one module per command."""
