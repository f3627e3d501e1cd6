"""Runs tf_dist's training in this process, then dumps what the tests inspect: this rank's final
weights and the per-replica batch sizes of the last step. With TF_PROBE_CHIEF_STAYS_S, rank 0
stays that long after the others have left, as a chief slow to exit does.

    python tests/tf_probe.py OUT_DIR --config configs/mlp.yaml key=value ...   (under any launcher)
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from launch.cluster.world import detect_world
from launch.run import loop
from launch.run.worker import parse_args
from tf_dist.train import build

out = Path(sys.argv[1])
config = parse_args("tf_probe", sys.argv[2:])
world = detect_world()
engine = build(config, world)
step_fn, last_step = engine.step_fn, {}


def recording_step(batches):
    """The engine's compiled step, recording what it returns: the replicas' batch sizes are third."""
    last_step["outputs"] = step_fn(batches)
    return last_step["outputs"]


engine.step_fn = recording_step
loop.train(config, world, engine)
np.savez(out / f"weights-rank{world.rank}.npz", *[w.numpy() for w in engine.model.weights])
info = {
    "replica_batch_sizes": last_step["outputs"][2].numpy().tolist(),
    "replicas": engine.strategy.num_replicas_in_sync,
}
if world.size > 1:  # MultiWorkerMirroredStrategy's CommunicationOptions (dist.bucket_mb), as it holds them
    options = engine.strategy.extended._communication_options
    info["bytes_per_pack"] = options.bytes_per_pack
    info["implementation"], info["timeout_seconds"] = options.implementation.name, options.timeout_seconds
    from tensorflow.python.eager import context

    info["heartbeat_timeout_ms"] = context.context().coordination_service.heartbeat_timeout_in_ms
(out / f"probe-rank{world.rank}.json").write_text(json.dumps(info))
if world.rank == 0:
    time.sleep(float(os.environ.get("TF_PROBE_CHIEF_STAYS_S", "0")))
