"""The hardware's peak arithmetic rate, so that a run's images/s reads as a fraction of what the
machine could do. Each input is stated with where it came from.

CPU: cores x fp32 lanes of the widest vector unit x 2 (a fused multiply-add is two operations) x
FMA pipes per core x clock, read from /proc/cpuinfo and cpufreq. GPU: NVIDIA's datasheet figure
for the model and precision (dense, no sparsity), the model read from the driver.
"""

from __future__ import annotations

import re
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
MAX_CLOCK = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")  # kHz; absent in most VMs
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")

# fp32 lanes per vector instruction, widest first (the flag /proc/cpuinfo lists)
LANES = (("avx512f", 16), ("avx", 8), ("sse2", 4))

# TFLOP/s per GPU, dense, from NVIDIA's datasheets: fp32 (CUDA cores), tf32, bf16 and fp16 (tensor
# cores). The H100 and H200 SXM share their compute. P100: SXM2 (the DGX-1's). The first name
# found in the driver's model name wins: the PCIe H100 before the SXM one.
GPU_TFLOPS = {
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05},
    "A10": {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
    "V100": {"fp32": 15.7, "fp16": 125.0},
    "T4": {"fp32": 8.1, "fp16": 65.0},
    "P100": {"fp32": 10.6, "fp16": 21.2},
}


def cpu_core_peak(cpuinfo: str | None = None, max_khz: str | None = None) -> dict:
    """One core's fp32 FLOP/s and the inputs it is made of, each with its source."""
    text = cpuinfo if cpuinfo is not None else _read(CPUINFO)
    flags = set(_field(text, "flags").split())
    vendor = _field(text, "vendor_id")
    lanes, isa = next(((n, flag) for flag, n in LANES if flag in flags), (1, "scalar"))
    fma = 2 if "fma" in flags or isa == "avx512f" else 1
    pipes = _fma_pipes(vendor, isa, _field(text, "cpu family"))
    ghz, clock_source = _clock(text, max_khz if max_khz is not None else _read(MAX_CLOCK))
    flops = lanes * fma * pipes[0] * ghz * 1e9
    return {
        "flops_per_s": flops,
        "inputs": {
            "fp32 lanes": [lanes, f"{isa} in /proc/cpuinfo flags"],
            "operations per lane": [fma, "fma in /proc/cpuinfo flags" if fma == 2 else "no fma flag"],
            "FMA pipes per core": list(pipes),
            "clock GHz": [round(ghz, 3), clock_source],
        },
    }


def _fma_pipes(vendor: str, isa: str, family: str) -> tuple[int, str]:
    """Vector FMA pipes a core issues per cycle at that width: not in /proc/cpuinfo, so a default by
    vendor and family. AMD's Zen 4 (family 25) runs a 512-bit operation as two 256-bit halves, Zen 5
    (26) has two full 512-bit pipes; Zen 2-3 and Intel since Haswell have two 256-bit pipes; Intel's
    server parts with AVX-512 have two 512-bit pipes on Gold and Platinum (one on some Silver and
    Bronze: then this is twice too high)."""
    if isa == "avx512f" and vendor == "AuthenticAMD" and family == "25":
        return 1, "default: AMD family 25 (Zen 4) runs 512-bit operations on two 256-bit pipes"
    if isa in ("avx512f", "avx"):
        return 2, "default: two vector FMA pipes per core (Zen 2+, Haswell+, Xeon Gold/Platinum)"
    return 1, "default: one vector pipe"


def _clock(cpuinfo: str, max_khz: str) -> tuple[float, str]:
    if max_khz.strip().isdigit():
        return int(max_khz) / 1e6, f"{MAX_CLOCK} (the highest clock)"
    mhz = _field(cpuinfo, "cpu MHz")
    if mhz:
        return float(mhz) / 1e3, "cpu MHz in /proc/cpuinfo (the clock when read; no cpufreq here)"
    return 1.0, "default: 1 GHz (no clock found)"


def gpu_peak(model: str, precision: str, tf32: bool) -> dict | None:
    """One GPU's FLOP/s at the run's precision, from the datasheet table; None for a model not in it."""
    row = next((GPU_TFLOPS[name] for name in GPU_TFLOPS if re.search(rf"\b{name}\b", model)), None)
    if row is None:
        return None
    kind = "tf32" if precision == "fp32" and tf32 and "tf32" in row else precision
    if kind not in row:
        return None
    return {"flops_per_s": row[kind] * 1e12, "inputs": {"datasheet TFLOP/s": [row[kind], f"{model}, {kind}, dense"]}}


def gpu_model() -> str:
    """The first NVIDIA GPU's model as the driver names it; "" without one."""
    for info in sorted(NVIDIA_GPUS.glob("*/information")):
        return _field(_read(info), "Model")
    return ""


def _field(text: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", text, re.MULTILINE)
    return match[1].strip() if match else ""


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def run_peak(device: str, precision: str, tf32: bool, units: int) -> dict:
    """The peak of what a run trained on: `units` GPUs, or CPU cores (rank 0's CPU model for all)."""
    if device == "cpu":
        one, what = cpu_core_peak(), f"{units} CPU core(s), fp32"
    else:
        model = gpu_model() or "an unnamed GPU"
        one, what = gpu_peak(model, precision, tf32), f"{units} x {model}"
        if one is None:
            return {
                "flops_per_s": 0.0,
                "units": what,
                "inputs": {"datasheet": [None, f"{model} at {precision}: not in the table"]},
            }
    return {"flops_per_s": one["flops_per_s"] * units, "units": what, "inputs": one["inputs"]}
