"""TensorFlow and Keras, loaded quietly: tf_dist's modules import them from here, never directly.

TensorFlow's C++ log is quiet unless the user set TF_CPP_MIN_LOG_LEVEL (2 shows its errors, 0
everything): level 3 keeps fatal lines only. Its errors repeat what the rank's one-line error says,
raw (a lost worker: gRPC's "Socket closed" from the ring and the collective executor, five lines per
rank before the line that names the rank and host); its warnings and notices are noise
(cpu_feature_guard, "GeneratorDatasetOp ... will not be optimized" every epoch on every rank).
Two lines are written while the library loads, before that level applies (absl's "before
absl::InitializeLog()" and oneDNN's notice): they are dropped from the load's stderr; everything
else it prints goes through.
"""

import contextlib
import os
import sys
import tempfile

_LOAD_TIME_LINES = (b"before absl::InitializeLog() is called", b"oneDNN custom operations are on")


def _load_quietly() -> None:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured:
                if not any(known in line for known in _LOAD_TIME_LINES):
                    os.write(2, line)


if "TF_CPP_MIN_LOG_LEVEL" not in os.environ and "tensorflow" not in sys.modules:
    _load_quietly()

import keras  # noqa: E402 -- after TensorFlow has loaded quietly
import tensorflow as tf  # noqa: E402

from launch.run import worker  # noqa: E402

AUTOGRAPH_MODULES = "__autograph_generated_file"  # AutoGraph's prefix for the modules it writes to the temp dir


def _remove_autograph_files() -> None:
    """AutoGraph writes each function it converts to a temp file and leaves its removal to atexit,
    which a rank's os._exit skips (launch.run.worker.leave): three files per run, otherwise."""
    for name, module in list(sys.modules.items()):
        if name.startswith(AUTOGRAPH_MODULES):
            with contextlib.suppress(OSError, TypeError):
                os.remove(module.__file__)


worker.before_leaving(_remove_autograph_files)

__all__ = ["keras", "tf"]
