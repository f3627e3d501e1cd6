"""TensorFlow trainer: MirroredStrategy on one node, MultiWorkerMirroredStrategy across processes.
Entry: python -m tf_dist.train

TensorFlow's C++ log is quiet here unless the user set TF_CPP_MIN_LOG_LEVEL: level 2 keeps errors
only (no cpu_feature_guard, no "GeneratorDatasetOp ... will not be optimized" every epoch on every
rank). Two lines are written while the library loads, before that level applies (absl's "before
absl::InitializeLog()" and oneDNN's notice): they are dropped from the import's stderr; everything
else it prints goes through.
"""

import os
import sys
import tempfile

_LOAD_TIME_LINES = (b"before absl::InitializeLog() is called", b"oneDNN custom operations are on")

if "TF_CPP_MIN_LOG_LEVEL" not in os.environ and "tensorflow" not in sys.modules:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    with tempfile.TemporaryFile() as _captured:
        _saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(_captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(_saved, 2)
            os.close(_saved)
            _captured.seek(0)
            for _line in _captured:
                if not any(known in _line for known in _LOAD_TIME_LINES):
                    os.write(2, _line)
