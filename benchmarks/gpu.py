"""The GPU path, on a machine with NVIDIA GPUs, PyTorch, TensorFlow and no network: `python benchmarks/gpu.py`.

Installs nothing. Three parts, each in its own process, so that one framework's failure (or its
hold on GPU memory) does not touch the other's:
1. torch on one GPU (benchmarks/gpu_torch.py), interleaved and repeated (median img/s):
     bare            the same model, bf16 autocast and batch, the training set on the GPU, foreach
                     Adam and zero_grad(set_to_none=True): what a careful hand-written loop does;
     bare+ddp        the bare step with the model in DDP over a one-rank NCCL group: what any
                     hand-written DDP loop pays on top;
     torch_dist      the trainer with dist.backend=nccl (a one-rank process group and DDP, as with
                     more ranks), the training set resident on the GPU;
     torch_dist, no DDP   the trainer as one GPU runs it by default (dist.backend=auto: no group);
     bare+compile    the bare step under torch.compile;
     bare+cudagraph  the bare step captured in a CUDA graph (capturable Adam, static inputs);
     dataloader      a per-sample Dataset + DataLoader pipeline from host memory, as the tutorials do;
   targets: torch_dist >= 0.9x bare+ddp, torch_dist without DDP >= 0.9x bare, torch_dist >= 1.5x
   dataloader (on an H200 the bare loop ran 3.2x (MLP) and 2.4x (CNN) the DataLoader's rate:
   benchmarks/results/gpu-h200.md).
2. TensorFlow on one GPU: benchmarks/tf_overhead.py (tf_dist against a bare tf.function loop and
   Keras model.fit); target: tf_dist >= 0.9x its bare loop.
3. Every GPU: `mnist-dist sweep` of both trainers over 1, 2, 4 ... N ranks (NCCL, weak scaling):
   img/s and efficiency per point.
A variant or part that fails is reported with its error, the others are still measured, and the
script exits 1. `--device cpu` runs it on CPUs: a smoke test of the script itself (without
torch.compile and CUDA graphs; the sweep's sizes from --workers).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import measure_parser  # noqa: E402 (no framework: each part imports its own)


def main() -> None:
    parser = measure_parser(__doc__.splitlines()[0], batch=512, warmup=50)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--workers", help="sweep sizes, e.g. 1,2 (default: 1, 2, 4 ... every GPU)")
    args = parser.parse_args()
    args.precision = "bf16"
    if args.device == "cuda" and not _gpu_count():
        print("benchmarks/gpu.py: no GPU here (nvidia-smi lists none): run it on a GPU node, or add --device cpu "
              "to try the script itself on the CPU", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    common = ["--model", args.model, "--batch", str(args.batch), "--steps", str(args.steps)]
    common += ["--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    with tempfile.TemporaryDirectory(prefix="mnist-dist-gpu-sweep-") as out:
        parts = {
            "torch on one device": [sys.executable, str(HERE / "gpu_torch.py"), "--device", args.device, *common],
            "TensorFlow on one device": [sys.executable, str(HERE / "tf_overhead.py"), "--precision", "bf16", *common],
            "both trainers on every GPU": sweep_command(args, Path(out)),
        }
        failed = [title for title, cmd in parts.items() if not part(title, cmd)]
    if failed:
        raise SystemExit(
            f"benchmarks/gpu.py: {len(failed)} part(s) failed or measured only in part: {'; '.join(failed)}"
        )


def part(title: str, cmd: list[str]) -> bool:
    """Run one part in its own process; a failing part is reported and the next one still runs."""
    print(f"\n## {title}", flush=True)
    done = subprocess.run(cmd, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"\n{title}: exit {done.returncode}: {last}", flush=True)
    return done.returncode == 0


def sweep_command(args, out: Path) -> list[str]:
    """Both trainers over 1 ... N ranks, one GPU each (dist.backend=auto is NCCL on GPUs), writing to `out`."""
    workers = args.workers or ",".join(str(n) for n in _powers_of_two(max(1, _gpu_count())))
    return [
        *(sys.executable, "-m", "launch", "sweep", "--framework", "torch,tf", "--workers", workers),
        *("--mode", "weak", "--repeats", str(min(args.repeats, 3)), "--steps", str(args.steps)),
        *(
            "--warmup",
            str(args.warmup),
            "--out",
            str(out),
            "--config",
            str(HERE.parent / "configs" / f"{args.model}.yaml"),
        ),
        *("data.dataset=synthetic", f"train.batch_size={args.batch}", f"train.precision={args.precision}"),
        "train.threads=1",
    ]


def _gpu_count() -> int:
    """GPUs as nvidia-smi lists them (this process imports no framework, so that each part owns its GPUs)."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in listed.splitlines())


def _powers_of_two(n: int) -> list[int]:
    sizes = [1]
    while sizes[-1] * 2 <= n:
        sizes.append(sizes[-1] * 2)
    return sizes if sizes[-1] == n else [*sizes, n]


if __name__ == "__main__":
    main()
