"""Loaded by every Python process started with tests/sample_log.env(): a trainer logs its samples."""

import os

if os.environ.get("MNIST_DIST_SAMPLE_LOG"):
    import sample_log

    sample_log.install(os.environ["MNIST_DIST_SAMPLE_LOG"], os.environ.get("MNIST_DIST_SAMPLE_HOLD", ""))
