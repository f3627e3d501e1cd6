"""Checkpoints with tf.train.CheckpointManager. Saving is collective under MultiWorkerMirroredStrategy:
every worker saves, the chief into the real folder and the others into temporary folders that are
removed at once (TensorFlow's multi-worker guidance). Every worker restores from the chief's folder
the checkpoint that launch.outputs.checkpoints picked.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from launch.atomic_files import no_space
from launch.errors import UserError
from launch.outputs.checkpoints import DamagedCheckpoint
from tf_dist.quiet import tf


class Checkpoints:
    def __init__(self, model, optimizer, model_name: str):
        self.model_name = model_name
        self.info = tf.Variable(
            "", dtype=tf.string, trainable=False
        )  # JSON: framework, model, launch.run.loop's progress
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, info=self.info)

    def save(self, folder: Path, step: int, is_chief: bool, progress: dict) -> None:
        self.info.assign(json.dumps({"framework": "tf", "model_name": self.model_name, "progress": progress}))
        target = folder if is_chief else Path(tempfile.mkdtemp(prefix="tf-dist-worker-ckpt-"))
        manager = tf.train.CheckpointManager(self.checkpoint, str(target), max_to_keep=None)
        try:
            manager.save(checkpoint_number=step)
        except tf.errors.OpError as exc:
            full = no_space(target / f"ckpt-{step}", exc)
            if full:
                for partial in target.glob(f"ckpt-{step}_temp*"):  # TensorFlow's own, left on a failure
                    shutil.rmtree(partial, ignore_errors=True)
                raise UserError(full) from None
            raise
        finally:
            if not is_chief:
                shutil.rmtree(target, ignore_errors=True)

    def restore(self, index_file: Path) -> dict:
        """The checkpoint whose index file is `index_file` (ckpt-N.index); returns its progress."""
        path = str(index_file.with_suffix(""))
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
            info = json.loads(self.info.numpy().decode())
        except (tf.errors.OpError, IndexError) as exc:  # cut short (the reader's IndexError) or corrupt
            raise DamagedCheckpoint(f"{path}: not readable ({str(exc).splitlines()[0]})") from None
        except (AssertionError, ValueError) as exc:
            raise UserError(
                f"{path}: not a tf_dist checkpoint of model {self.model_name!r} "
                f"({str(exc).splitlines()[0]}); use another checkpoint.dir"
            ) from None
        if info.get("framework") != "tf" or info.get("model_name") != self.model_name:
            raise UserError(
                f"{path}: holds {info.get('framework')} model {info.get('model_name')!r}, not tf "
                f"{self.model_name!r}; resume with the same model.name or use another checkpoint.dir"
            )
        return info.get("progress", {})
