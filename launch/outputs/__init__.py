"""What a run leaves on disk and reads back: its directory and lock, its identity, checkpoints,
summary.json and TensorBoard event files."""
