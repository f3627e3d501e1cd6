"""Where a TensorFlow step's time goes, from TensorFlow's own profiler trace:

    torchrun --standalone --nproc-per-node 2 benchmarks/tf_profile.py --model mlp   # 2 workers, one host
    python benchmarks/tf_profile.py --model mlp                                     # 1 worker: the reference

Builds tf_dist's engine (the trainer's strategy, step function and input pipeline), runs warm-up
steps, then profiles --steps steps with tf.profiler and reads the chief's trace (XPlane): the wall
time per step, and per thread and per op the time spent, so that compute, the collective all-reduce
and waiting can be told apart. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from launch.cluster.cpus import threads_per_worker  # noqa: E402
from launch.cluster.world import detect_world  # noqa: E402
from launch.config import load_config  # noqa: E402
from launch.data.shard import shard_indices  # noqa: E402
from tf_dist import distributed  # noqa: E402
from tf_dist.quiet import tf  # noqa: E402
from tf_dist.train import TFEngine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.accumulate_steps=4")
    args = parser.parse_args()
    world = detect_world()
    config = load_config(
        ROOT / "configs" / f"{args.model}.yaml",
        ["data.dataset=synthetic", "train.batch_size=128", "train.threads=1", *args.overrides],
    )
    gpus = distributed.configure_devices(threads_per_worker(config, world), world, config.dist.cpu_devices)
    engine = TFEngine(config, world, distributed.make_strategy(config, world, gpus), "cpu")
    engine.start_epoch(shard_indices(engine.n_train, world.rank, world.size, 0, 0).indices)
    for i in range(20):  # warm-up: tracing, the collectives' first group resolution
        engine.train_step(i)
    engine.take_outputs()
    engine.comm.barrier()
    logdir = tempfile.mkdtemp(prefix="tf-profile-")
    tf.profiler.experimental.start(logdir)
    began = time.perf_counter()
    for i in range(20, 20 + args.steps):
        engine.train_step(i)
    engine.take_outputs()  # the host sync that ends the last step
    wall = time.perf_counter() - began
    tf.profiler.experimental.stop()
    engine.comm.barrier()
    if world.rank == 0:
        print(report(args, (world.size, config.train.threads), wall, next(Path(logdir).rglob("*.xplane.pb"))))


def report(args, placement: tuple[int, int], wall: float, xplane: Path) -> str:
    """`placement`: workers, and threads per worker."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(xplane.read_bytes())
    per_op: dict[str, float] = collections.defaultdict(float)
    counts: collections.Counter = collections.Counter()
    busy_threads: dict[str, float] = collections.defaultdict(float)
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                per_op[name] += event.duration_ps / 1e9  # ms
                counts[name] += 1
                busy_threads[line.name] += event.duration_ps / 1e9
    steps = args.steps
    lines = [
        f"### TensorFlow step profile: {args.model}, {placement[0]} worker(s), {placement[1]} thread(s) each, "
        f"batch 128 per worker (tensorflow {tf.__version__})\n",
        f"Wall time per step (rank 0): {1000 * wall / steps:.2f} ms over {steps} profiled steps.\n",
        f"Top {args.top} trace events on rank 0's host plane by total time per step (events nest: a parent "
        "includes its children; threads run in parallel):\n",
        "| event | ms per step | calls per step |",
        "|---|---:|---:|",
    ]
    for name, total in sorted(per_op.items(), key=lambda kv: -kv[1])[: args.top]:
        lines.append(f"| `{name[:90]}` | {total / steps:.2f} | {counts[name] / steps:.1f} |")
    lines += ["", "| thread | busy ms per step |", "|---|---:|"]
    for name, total in sorted(busy_threads.items(), key=lambda kv: -kv[1])[:8]:
        lines.append(f"| `{name[:60]}` | {total / steps:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
