"""Generation throughput: target-steps per second per method and chunk size, in one run, with the
FLOP per step, the fraction of the device's peak, the peak memory, and the projected wall time of
the paper's full atlas.

    uv run python benchmarks/throughput.py                        # embedded classifier, CPU
    uv run python benchmarks/throughput.py --classifier torchvision:vgg16 --weights random \
        --image-size 64 --width 0.25 --chunks 1,4 --steps 2       # VGG-16, reduced for a CPU
    uv run python benchmarks/throughput.py --classifier torchvision:vgg16 --weights random \
        --width 1.0 --chunks 1,16,64,128 --device cuda            # the paper's sizes, on a GPU

Each measurement runs `atlas.optimise.optimise` (the loop `atlas generate` runs) for `--steps`
steps after two warm-up steps, on a chunk of `class` targets, and prints:

- s/step (wall) and CPU s/step (user+sys of this process), target-steps/s = chunk / s/step;
- GFLOP/step: counted with torch's FlopCounterMode on one step of a one-target chunk (forward and
  backward of G and D, fp32) and scaled by the chunk (the work per target does not depend on the
  chunk; FlopCounterMode over-counts grouped convolutions' backward, so it is not counted on one);
- TFLOP/s achieved (per wall second) and the fraction of the device's peak: on a GPU the
  datasheet peak of `_bench.GPU_PEAKS` at the run's precision (or --peak-tflops); on a CPU the
  peak measured in this run with a large fp32 matmul, both per CPU-second (on a shared machine
  the wall clock also counts other processes' turns);
- peak memory: GPU memory allocated by tensors, or on a CPU the process's peak RSS (which
  includes the Python process and D, about 0.5-1 GiB before any chunk);
- ops/step: the tensor operations one step dispatches (counted on a 3-step run minus a 1-step
  run, so without the once-per-run set-up); on a GPU about one kernel launch each, so it should
  not grow with the chunk;
- each chunk's throughput relative to the first chunk size's;
- "D alone": D's forward and backward to its input on a chunk of random images, the work every
  method shares per target-step, timed the same way. Its chunk ratio bounds what batching can
  gain on the device whatever Atlas does around D: on a CPU a single 224 px image already keeps
  the cores busy;
- the projected wall time of the full 1000-class atlas with the scratch method at 500 steps and
  the pretrained method at 1200 steps (the paper's budgets, `atlas.methods` preset `paper`) on
  this one device, from the best throughput measured per method (per-job start-up excluded; see
  benchmarks/job_overhead.py), and, from the FLOP counts alone, the time the same atlas takes on
  one H100 at 100%, 30% and 10% of its bf16 peak.

A benchmark, not a test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch
from _bench import (
    GPU_PEAKS,
    Clock,
    OpCounter,
    cpu_peak_tflops,
    describe_device,
    gpu_peak_tflops,
    peak_memory_gib,
    reset_peak_memory,
    write_json,
)
from torch.utils.flop_counter import FlopCounterMode

from atlas.classifier import Classifier, load_classifier
from atlas.generate import GenerateConfig, _parameterisation, random_transforms, resolve_decoder
from atlas.methods import MethodSettings, settings_for, takes
from atlas.objectives import Objective, target_objective
from atlas.optimise import chunk_loss, make_optimiser, optimise
from atlas.parameterise import Parameterisation
from atlas.runtime import PRECISIONS, SWITCHES, Runtime, pick_device, resolve_runtime
from atlas.targets import Target
from atlas.transforms import RandomTransforms

# The paper's budgets (atlas.methods, preset paper) and the size of the full atlas.
PAPER_STEPS = {m: settings_for(m, "paper").steps for m in ("scratch", "pretrained")}
CLASSES = 1000


def _setup(
    clf: Classifier, method: str, chunk: int, width: float, device: torch.device, runtime: Runtime
) -> tuple[MethodSettings, list[Objective], Parameterisation, RandomTransforms | None]:
    """A chunk as `atlas generate` runs it: the method's default settings, its random
    transformations when they are on (the default), the magnitude of maco the 1/f law."""
    s = settings_for(method, overrides={"width": str(width)})
    targets = [Target("class", (c % clf.num_classes,)) for c in range(chunk)]
    cfg = GenerateConfig(settings=s, decoder="random" if takes(method, "decoder") else None)
    seeds = [t.seed(0) for t in targets]
    param = _parameterisation(cfg, clf, seeds, resolve_decoder(cfg), None, device)
    param.prepare(runtime)
    return (
        s,
        [target_objective(t, s.penalty, s.target_relu) for t in targets],
        param,
        random_transforms(s, clf, seeds, device),
    )


def flop_per_target_step(clf: Classifier, method: str, width: float, device: torch.device) -> int:
    """FLOP of one optimisation step of one target (fp32, uncompiled: the count is the model's)."""
    s, objs, param, transforms = _setup(clf, method, 1, width, device, Runtime())
    opt = make_optimiser(s, param.parameters())
    with FlopCounterMode(display=False) as counter:
        images = param.images(noise=True)
        loss = chunk_loss(clf, objs, transforms(images) if transforms else images) + param.regulariser()
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    return counter.get_total_flops()


def ops_per_step(clf: Classifier, method: str, chunk: int, width: float, device: torch.device, runtime: Runtime) -> int:
    """Tensor operations one step dispatches: a 3-step run's minus a 1-step run's, halved."""
    counts = []
    for steps in (1, 3):
        s, objs, param, transforms = _setup(clf, method, chunk, width, device, runtime)
        with OpCounter() as counter:
            optimise(clf, objs, param, replace(s, steps=steps, snapshots=1), runtime=runtime, transforms=transforms)
        counts.append(counter.count)
    return (counts[1] - counts[0]) // 2


def measure_d_alone(
    clf: Classifier, chunk: int, steps: int, device: torch.device, runtime: Runtime
) -> dict[str, float]:
    """D's forward and backward to its input on `chunk` random images, per step (no G, no loss
    beyond a sum of the logits, no optimiser)."""
    x = torch.randn(chunk, 3, clf.input_size, clf.input_size, device=device, requires_grad=True)
    x = x.detach().to(memory_format=runtime.memory_format()).requires_grad_(True)

    def step() -> None:
        with runtime.autocast(device):
            logits = clf.forward(x).logits
        assert logits is not None
        x.grad = None
        logits.float().sum().backward()

    for _ in range(2):
        step()
    reset_peak_memory(device)
    with Clock(device) as clock:
        for _ in range(steps):
            step()
    return {
        "sec_per_step": clock.wall / steps,
        "cpu_per_step": clock.cpu / steps,
        "target_steps_per_s": chunk * steps / clock.wall,
        "peak_gib": peak_memory_gib(device),
    }


def measure(
    clf: Classifier, method: str, chunk: int, steps: int, width: float, device: torch.device, runtime: Runtime
) -> dict[str, float]:
    s, objs, param, transforms = _setup(clf, method, chunk, width, device, runtime)
    run = replace(s, snapshots=1)
    optimise(clf, objs, param, replace(run, steps=2), runtime=runtime, transforms=transforms)  # warm-up (and compile)
    reset_peak_memory(device)
    with Clock(device) as clock:
        optimise(clf, objs, param, replace(run, steps=steps), runtime=runtime, transforms=transforms)
    return {
        "sec_per_step": clock.wall / steps,
        "cpu_per_step": clock.cpu / steps,
        "target_steps_per_s": chunk * steps / clock.wall,
        "peak_gib": peak_memory_gib(device),
    }


def _duration(seconds: float) -> str:
    if seconds < 600:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 * 2 else f"{seconds / 3600:.1f} h"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", default="efficientnet-lite0")
    ap.add_argument("--weights", default="default")
    ap.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="run D at PX x PX instead of its own size (a reduced run on a CPU; labelled)",
    )
    ap.add_argument("--methods", default="pretrained,scratch,pixel")
    ap.add_argument("--chunks", default="1,4,16")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after 2 warm-up steps)")
    ap.add_argument(
        "--width", type=float, default=0.25, help="generator width, scratch and pretrained (1.0: the paper's)"
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS)
    ap.add_argument("--channels-last", default="auto", choices=SWITCHES)
    ap.add_argument("--fold-bn", default="auto", choices=SWITCHES, help="as `atlas generate --fold-bn`")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="let cuDNN time its convolution algorithms for each shape first (a job's shapes never change)",
    )
    ap.add_argument("--no-d-alone", action="store_true", help="skip the D-alone rows")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak (default: table or measured)")
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the rows and the projection to FILE (benchmarks/gpu_verdict.py reads it)",
    )
    args = ap.parse_args()
    device = pick_device(args.device)
    runtime = resolve_runtime(args.precision, args.channels_last, args.compile, device, args.fold_bn)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    clf = load_classifier(args.classifier, args.weights, image_size=args.image_size).to(device)
    clf.prepare(runtime.channels_last, runtime.compile, runtime.fold_bn)
    chunks = [int(c) for c in args.chunks.split(",")]

    peak, peak_src = args.peak_tflops, "--peak-tflops"
    if peak is None and device.type == "cuda":
        peak, peak_src = gpu_peak_tflops(device, runtime.precision), f"datasheet {runtime.precision} dense"
    if peak is None and device.type == "cpu":
        peak, peak_src = cpu_peak_tflops(), "measured here: fp32 2048^3 matmul, per CPU-second"
    size = f"{clf.input_size}px" + (" (REDUCED from the classifier's own size)" if args.image_size else "")
    print(
        f"{describe_device(device)}, torch {torch.__version__}, runtime {runtime.as_dict()}"
        + (", cudnn.benchmark on" if args.cudnn_benchmark else "")
    )
    print(
        f"classifier {args.classifier} ({args.weights}) at {size}, G width {args.width}, "
        f"peak {peak if peak is None else f'{peak:.3f}'} TFLOP/s ({peak_src})"
    )
    print(
        f"{'method':<11}{'chunk':>6}{'s/step':>9}{'cpu s/step':>11}{'tgt-steps/s':>12}{'GFLOP/step':>11}"
        f"{'TFLOP/s':>9}{'of peak':>9}{'peak GiB':>9}{'ops/step':>9}"
    )

    report: dict[str, object] = {
        "device": describe_device(device),
        "torch": torch.__version__,
        "runtime": runtime.as_dict(),
        "cudnn_benchmark": args.cudnn_benchmark,
        "classifier": args.classifier,
        "weights": args.weights,
        "input_size": clf.input_size,
        "reduced": bool(args.image_size),
        "width": args.width,
        "steps": args.steps,
        "peak_tflops": peak,
        "peak_source": peak_src,
        "rows": [],
    }

    def show(name: str, chunk: int, r: dict[str, float], flop: int, ops: int | None, base: float) -> None:
        tflops = flop / r["sec_per_step"] / 1e12
        # On a CPU the fraction is per CPU-second, as its measured peak (see _bench).
        per_s = r["cpu_per_step"] if device.type == "cpu" else r["sec_per_step"]
        fraction = flop / per_s / 1e12 / peak if peak else None
        frac = "-" if fraction is None else f"{fraction:.1%}"
        report["rows"].append(
            {
                "method": name,
                "chunk": chunk,
                **r,
                "flop_per_step": flop,
                "tflops": tflops,  # type: ignore[attr-defined]
                "fraction_of_peak": fraction,
                "ops_per_step": ops,
                "ratio_vs_first": r["target_steps_per_s"] / base,
            }
        )
        ratio = f"   x{r['target_steps_per_s'] / base:.2f} vs chunk {chunks[0]}" if chunk != chunks[0] else ""
        print(
            f"{name:<11}{chunk:>6}{r['sec_per_step']:>9.3f}{r['cpu_per_step']:>11.3f}"
            f"{r['target_steps_per_s']:>12.2f}{flop / 1e9:>11.1f}{tflops:>9.3f}{frac:>9}{r['peak_gib']:>9.2f}"
            f"{'-' if ops is None else ops:>9}{ratio}",
            flush=True,
        )

    best: dict[str, tuple[float, int]] = {}
    flop_per_target: dict[str, int] = {}
    for method in args.methods.split(","):
        base = None
        per_target = flop_per_target[method] = flop_per_target_step(clf, method, args.width, device)
        for chunk in chunks:
            r = measure(clf, method, chunk, args.steps, args.width, device, runtime)
            base = base or r["target_steps_per_s"]
            ops = ops_per_step(clf, method, chunk, args.width, device, runtime)
            show(method, chunk, r, per_target * chunk, ops, base)
            if r["target_steps_per_s"] > best.get(method, (0.0, 0))[0]:
                best[method] = (r["target_steps_per_s"], chunk)
    if not args.no_d_alone:
        with FlopCounterMode(display=False) as counter:
            x = torch.zeros(1, 3, clf.input_size, clf.input_size, device=device, requires_grad=True)
            clf.forward(x).logits.sum().backward()  # type: ignore[union-attr]
        base = None
        for chunk in chunks:
            r = measure_d_alone(clf, chunk, args.steps, device, runtime)
            base = base or r["target_steps_per_s"]
            show("D alone", chunk, r, counter.get_total_flops() * chunk, None, base)
    if all(m in best for m in PAPER_STEPS):
        total = 0.0
        parts = []
        for method, steps in PAPER_STEPS.items():
            rate, chunk = best[method]
            seconds = CLASSES * steps / rate
            total += seconds
            parts.append(f"{method} {CLASSES} x {steps} steps at chunk {chunk}: {_duration(seconds)}")
        print(
            f"projected full atlas on this device ({size}, G width {args.width}): "
            + "; ".join(parts)
            + f"; total {_duration(total)} (per-job start-up excluded)"
        )
        report["projection"] = {
            "seconds": total,
            "best": {m: {"target_steps_per_s": r, "chunk": c} for m, (r, c) in best.items()},
            "paper_steps": PAPER_STEPS,
            "classes": CLASSES,
        }
    if all(m in flop_per_target for m in PAPER_STEPS):
        # Device-independent: the full atlas's FLOP and what it takes at a given fraction of a peak.
        total_flop = sum(CLASSES * steps * flop_per_target[m] for m, steps in PAPER_STEPS.items())
        h100 = GPU_PEAKS["H100 SXM"]["bf16"] * 1e12
        print(
            f"full atlas by FLOP count ({size}, G width {args.width}): {total_flop / 1e15:.0f} PFLOP; "
            f"on one H100 (bf16 dense peak {h100 / 1e12:.0f} TFLOP/s) {_duration(total_flop / h100)} at 100% of peak, "
            f"{_duration(total_flop / (0.3 * h100))} at 30%, {_duration(total_flop / (0.1 * h100))} at 10%"
        )
        report["atlas_flop"] = total_flop
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
