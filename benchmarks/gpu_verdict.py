"""Atlas's two GPU targets, read off the JSON that throughput.py and job_overhead.py write.

    python benchmarks/gpu_verdict.py --throughput OUT/throughput.json --overhead OUT/overhead.json

- Fraction of the device's bf16 peak reached by the pretrained method: the best chunk's row of
  `throughput.py --json` (its peak from the datasheet table in `_bench.GPU_PEAKS`). Goal: 30%.
- Projected wall time of the full 1000-class atlas with both methods at the paper's budgets
  (scratch 500 steps, pretrained 1200) on one GPU: per method 1000 x steps / the best measured
  target-steps per second, plus one job's start-up (`job_overhead.py --json`: imports, model
  load, scoring, writing) for each of the ceil(1000 / chunk) jobs the workflow runs at that
  chunk, one job after another on the one GPU. Goal: under 30 minutes.

Prints one line per goal with the figures and "met" or "NOT met", then the caveats that apply
(a CPU run, a reduced image size, a GPU other than an H100). A benchmark's report, not a test:
it exits 0 whatever the verdict, and non-zero only when an input is missing or malformed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from atlas.methods import settings_for

FRACTION_GOAL = 0.30
ATLAS_GOAL_S = 30 * 60
CLASSES = 1000


def _load(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        sys.exit(f"gpu_verdict: {what} file {path} does not exist; run benchmarks/{what}.py with --json {path} first")
    except json.JSONDecodeError as exc:
        sys.exit(f"gpu_verdict: {path} is not JSON ({exc}); rerun benchmarks/{what}.py --json {path}")
    if not isinstance(data, dict):
        sys.exit(f"gpu_verdict: {path} holds no report object; rerun benchmarks/{what}.py --json {path}")
    return data


def best_rows(reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method, the row with the most target-steps per second over all the reports."""
    best: dict[str, dict[str, Any]] = {}
    for report in reports:
        for row in report.get("rows", []):
            if row["method"] == "D alone":
                continue
            row = {**row, "_report": report}
            if row["target_steps_per_s"] > best.get(row["method"], {"target_steps_per_s": 0.0})["target_steps_per_s"]:
                best[row["method"]] = row
    return best


def atlas_seconds(
    best: dict[str, dict[str, Any]], overhead_s: float, steps: dict[str, int], classes: int
) -> tuple[float, list[str]]:
    total, parts = 0.0, []
    for method, n in steps.items():
        row = best[method]
        work = classes * n / row["target_steps_per_s"]
        jobs = math.ceil(classes / row["chunk"])
        total += work + jobs * overhead_s
        parts.append(
            f"{method} {classes} x {n} steps at chunk {row['chunk']}: {work:.0f} s + {jobs} jobs x {overhead_s:.1f} s"
        )
    return total, parts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--throughput",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help="throughput.py --json output (repeatable: the best row per method over all)",
    )
    ap.add_argument("--overhead", type=Path, required=True, metavar="FILE", help="job_overhead.py --json output")
    args = ap.parse_args(argv)
    reports = [_load(p, "throughput") for p in args.throughput]
    over = _load(args.overhead, "job_overhead")
    best = best_rows(reports)
    missing = [m for m in ("pretrained", "scratch") if m not in best]
    if missing:
        sys.exit(
            f"gpu_verdict: no {' or '.join(missing)} rows in {', '.join(map(str, args.throughput))}; "
            "run throughput.py with --methods pretrained,scratch"
        )
    steps = {m: settings_for(m, "paper").steps for m in ("scratch", "pretrained")}

    pre = best["pretrained"]
    rep = pre["_report"]
    frac = pre["fraction_of_peak"]
    print(f"{rep['device']}, torch {rep['torch']}, runtime {rep['runtime']}")
    print(f"classifier {rep['classifier']} ({rep['weights']}) at {rep['input_size']}px, G width {rep['width']}")
    verdict = "-" if frac is None else ("met" if frac >= FRACTION_GOAL else "NOT met")
    shown = "unknown (no peak for this device)" if frac is None else f"{frac:.1%}"
    print(
        f"pretrained, best chunk {pre['chunk']}: {pre['target_steps_per_s']:.1f} target-steps/s, {pre['tflops']:.4g} TFLOP/s "
        f"= {shown} of the {rep['runtime'].get('precision')} peak {rep['peak_tflops'] or 0:.4g} TFLOP/s "
        f"(goal {FRACTION_GOAL:.0%}): {verdict}"
    )
    total, parts = atlas_seconds(best, float(over["overhead_wall_s"]), steps, CLASSES)
    print(
        f"full {CLASSES}-class atlas, both methods, one device: {total / 60:.1f} min (goal under {ATLAS_GOAL_S // 60} min): "
        f"{'met' if total < ATLAS_GOAL_S else 'NOT met'}"
    )
    for part in parts:
        print(f"  {part}")
    print(
        f"  job start-up measured on {over['method']} chunk {over['chunk']} ({over['classifier']}, {over['device']}): "
        f"{over['overhead_wall_s']:.1f} s wall, of which imports {over['imports_wall_s']:.1f} s"
    )
    if "cuda" not in rep["device"]:
        print("caveat: not a GPU run; the goals are for one GPU")
    if rep.get("reduced") or rep["input_size"] != 224 or rep["width"] != 1.0:
        print("caveat: not the paper's sizes (VGG-16 at 224 px, G width 1.0)")
    if "cuda" in rep["device"] and "H100" not in rep["device"]:
        print(
            "caveat: the goal names an H100; an H200 has the H100 SXM's bf16 peak (989 TFLOP/s dense) "
            "and 1.4x its memory bandwidth (4.8 against 3.35 TB/s), so memory-bound work runs faster on it"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
