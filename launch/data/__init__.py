"""Datasets: finding, downloading and verifying them, reading their files, and each rank's shard."""
