"""Experiments over many runs: sweeps, the scaling and comparison reports, the regression gate,
TensorBoard's HParams sessions, and the diff of two runs."""
