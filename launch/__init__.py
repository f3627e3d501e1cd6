"""mnist-dist's framework-neutral core: config, data, world discovery, run directory, CLI.

Importing it never imports torch or tensorflow: the CLI and launchers must start fast and work on
login nodes that have neither.
"""

__version__ = "0.1.0"
