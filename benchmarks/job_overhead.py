"""Per-job overhead of the workflow: `atlas generate`'s start-up against the job's work.

    uv run python benchmarks/job_overhead.py                                   # embedded, CPU
    uv run python benchmarks/job_overhead.py --classifier torchvision:vgg16 --weights random \
        --method pretrained --chunk 32 --width 1.0 --steps 21 --device cuda    # on a GPU

Runs the command a generation job runs (`atlas generate`, as a subprocess, as snakemake does) on
one chunk three ways: Python importing atlas and torch only; `--steps 1`; `--steps N`. Then

    per step  = (t(N) - t(1)) / (N - 1)
    overhead  = t(1) - per step     (imports, classifier and decoder load, set-up, first-step
                                     warm-up, scoring, writing the PNGs and records)

and, for the jobs of a run at the budgets given by --job-steps, the share of a job's time that is
overhead. Wall and CPU (user+sys of the child processes) seconds. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import write_json

from atlas.methods import takes


def _timed(cmd: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _atlas() -> list[str]:
    """The `atlas` console script of this environment (what a job runs), else `python -m`."""
    script = Path(sys.executable).with_name("atlas")
    return [str(script)] if script.exists() else [sys.executable, "-m", "atlas.cli"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", default="efficientnet-lite0")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--method", default="scratch")
    ap.add_argument("--chunk", type=int, default=8, help="targets in the job (config.yaml's classes_per_job)")
    ap.add_argument("--steps", type=int, default=11, help="N: steps of the long run")
    ap.add_argument("--width", type=float, default=0.25, help="scratch generator width")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--job-steps",
        default="150,500,1200",
        help="steps of the jobs to project the overhead share for (config.yaml's 150; the paper's 500/1200)",
    )
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the figures to FILE (benchmarks/gpu_verdict.py reads it)",
    )
    args = ap.parse_args()
    out_root = Path(tempfile.mkdtemp(prefix="atlas-overhead-"))
    base = [
        *_atlas(),
        "generate",
        "--classifier",
        args.classifier,
        "--weights",
        args.weights,
        "--method",
        args.method,
        "--targets",
        f"class:0-{args.chunk - 1}",
        "--batch-size",
        str(args.chunk),
        "--device",
        args.device,
        "--on-nan",
        "record",
    ]
    if takes(args.method, "decoder"):
        base += ["--decoder", "random"]
    if args.method == "scratch":
        base += ["--width", str(args.width)]
    if args.image_size:
        base += ["--image-size", str(args.image_size)]
    try:
        imports = _timed([sys.executable, "-c", "import torch, atlas.generate, atlas.classifier"])
        one = _timed([*base, "--steps", "1", "--out", str(out_root / "one")])
        many = _timed([*base, "--steps", str(args.steps), "--out", str(out_root / "many")])
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
    print(
        f"atlas generate --method {args.method} --classifier {args.classifier} ({args.weights}), chunk {args.chunk}, "
        f"device {args.device}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(f"{'':<26}{'wall s':>9}{'cpu s':>9}")
    print(f"{'imports only':<26}{imports[0]:>9.2f}{imports[1]:>9.2f}")
    print(f"{'--steps 1':<26}{one[0]:>9.2f}{one[1]:>9.2f}")
    print(f"{f'--steps {args.steps}':<26}{many[0]:>9.2f}{many[1]:>9.2f}")
    step = [(m - o) / (args.steps - 1) for m, o in zip(many, one, strict=True)]
    over = [o - s for o, s in zip(one, step, strict=True)]
    print(f"{'per step (chunk)':<26}{step[0]:>9.3f}{step[1]:>9.3f}")
    print(f"{'overhead per job':<26}{over[0]:>9.2f}{over[1]:>9.2f}   (of which imports {imports[0]:.2f} s wall)")
    for steps in (int(s) for s in args.job_steps.split(",")):
        work = steps * step[0]
        print(
            f"job of {steps} steps: work {work:.1f} s, overhead {over[0]:.1f} s = {over[0] / (over[0] + work):.1%} of the job (wall)"
        )
    if args.json:
        write_json(
            args.json,
            {
                "method": args.method,
                "classifier": args.classifier,
                "weights": args.weights,
                "chunk": args.chunk,
                "device": args.device,
                "imports_wall_s": imports[0],
                "step_wall_s": step[0],
                "step_cpu_s": step[1],
                "overhead_wall_s": over[0],
                "overhead_cpu_s": over[1],
            },
        )


if __name__ == "__main__":
    main()
