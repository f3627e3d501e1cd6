"""The per-rank runtime: a trainer process's entry point, the training loop both frameworks share,
its collectives, metrics, stragglers and records."""
