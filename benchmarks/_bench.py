"""Helpers shared by the benchmark scripts: the device, its peak, timing and peak memory.

Peaks: a GPU's from the table below by device name (vendor datasheets, dense, no sparsity); a
CPU's measured in the same run with a large fp32 matmul (the best any kernel here can do on
it), so a fraction of the CPU's peak is a fraction of what this CPU showed it can do. On a CPU
both are per CPU-second (user+sys of this process), not per wall second: on a shared machine the
wall clock also counts the time other processes held the cores.
"""

from __future__ import annotations

import contextlib
import json
import resource
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from atlas import allocator
from atlas.io import write_text

# As `atlas` sets it before any stage runs, so that a benchmark measures what the jobs run.
allocator.tune()

# TFLOP/s, dense (NVIDIA datasheets). fp32 is the plain (non-tensor-core) rate; "tf32" the
# tensor-core rate that cuDNN uses for fp32 convolutions by default.
GPU_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0},
    "H100 80GB HBM3": {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0},  # H100 SXM
    "H100 SXM": {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0},
    "H100 NVL": {"bf16": 835.0, "tf32": 418.0, "fp32": 60.0},
    "H100 PCIe": {"bf16": 756.0, "tf32": 378.0, "fp32": 51.0},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "tf32": 183.0, "fp32": 91.6},
    "L4": {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3},
    "A10": {"bf16": 125.0, "tf32": 62.5, "fp32": 31.2},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"device {device} ({torch.cuda.get_device_name(device)})"
    return f"device cpu ({torch.get_num_threads()} threads)"


def gpu_peak_tflops(device: torch.device, precision: str) -> float | None:
    """The table's peak for this GPU at `precision` (fp32 runs count against the tf32 peak,
    which cuDNN's default convolutions use), or None for a GPU not in the table."""
    name = torch.cuda.get_device_name(device)
    key = "bf16" if precision == "bf16" else "tf32"
    for model, peaks in GPU_PEAKS.items():
        if model in name:
            return peaks[key]
    return None


def cpu_peak_tflops(size: int = 2048, repeats: int = 10) -> float:
    """Measured: TFLOP per CPU-second of the best of `repeats` fp32 (size x size) @ (size x size)
    matmuls (CPU time: see the module docstring)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        a @ b
        best = min(best, time.process_time() - t0)
    return 2 * size**3 / best / 1e12


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or the process's peak RSS (Linux resets
    VmHWM when "5" is written to /proc/self/clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # not Linux: the peak below is then the process's lifetime peak
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_gib(device: torch.device) -> float:
    """Peak since `reset_peak_memory`: GPU memory allocated by tensors, or the process's RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


class Clock:
    """Wall and CPU (user+sys of this process) seconds between start and stop."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> Clock:
        sync(self.device)
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        sync(self.device)
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


class OpCounter(TorchDispatchMode):
    """Counts the tensor operations dispatched while active. On a GPU each one that computes is
    a kernel launch (a view launches none), each costing the host a few microseconds, so a step
    whose count grows with the chunk can leave a large chunk waiting on Python."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.count += 1
        return func(*args, **(kwargs or {}))


def write_json(path: Path, data: object) -> None:
    """`data` as JSON at `path`, written atomically (atlas.io, which also makes its folder)."""
    write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
