"""TensorFlow and Keras, loaded quietly: tf_dist's modules import them from here, never directly.

TensorFlow's C++ log is quiet unless the user set TF_CPP_MIN_LOG_LEVEL: level 2 keeps errors only
(no cpu_feature_guard, no "GeneratorDatasetOp ... will not be optimized" every epoch on every rank).
Two lines are written while the library loads, before that level applies (absl's "before
absl::InitializeLog()" and oneDNN's notice): they are dropped from the load's stderr; everything
else it prints goes through.
"""

import os
import sys
import tempfile

_LOAD_TIME_LINES = (b"before absl::InitializeLog() is called", b"oneDNN custom operations are on")


def _load_quietly() -> None:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
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

__all__ = ["keras", "tf"]
