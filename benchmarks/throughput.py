"""Generation throughput: target-steps per second for chunk sizes, per method, in one run.

    uv run python benchmarks/throughput.py                       # embedded classifier, CPU
    uv run python benchmarks/throughput.py --classifier torchvision:vgg16 --weights random \
        --width 1.0 --chunks 1,16,64 --peak-tflops 989            # GPU (H100 bf16 dense peak)

Prints one line per (method, chunk): seconds per step, target-steps/s, FLOP per step (counted
with torch's FlopCounterMode on one step), achieved TFLOP/s and the fraction of `--peak-tflops`,
peak memory on CUDA; then the ratio of each chunk's throughput to chunk 1's. A benchmark, not a
test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from atlas.generate import GenerateConfig, _parameterisation, pick_device, resolve_decoder
from atlas.classifier import load_classifier
from atlas.methods import settings_for
from atlas.optimise import chunk_loss, make_optimiser
from atlas.targets import Target


def _step(clf, objs, param, opt) -> None:
    loss = chunk_loss(clf, objs, param.images(noise=True)) + param.regulariser()
    opt.zero_grad(set_to_none=True)
    loss.sum().backward()
    opt.step()
    param.after_step()


def _setup(clf, method: str, chunk: int, width: float, device: torch.device):
    s = settings_for(method, overrides={"width": str(width)})
    targets = [Target("class", (c,)) for c in range(chunk)]
    cfg = GenerateConfig(settings=s, decoder="random" if method == "pretrained" else None)
    param = _parameterisation(cfg, clf, [t.seed(0) for t in targets], resolve_decoder(cfg), device)
    objs = [t.objective(s.penalty, s.target_relu) for t in targets]
    return objs, param, make_optimiser(s, param.parameters())


def flop_per_target_step(clf, method: str, width: float, device: torch.device) -> int:
    """FLOP of one optimisation step of one target. Counted on a chunk of one and scaled by the
    chunk size: the work per target is the same in any chunk, and FlopCounterMode over-counts
    grouped convolutions' backward."""
    objs, param, opt = _setup(clf, method, 1, width, device)
    with FlopCounterMode(display=False) as counter:
        _step(clf, objs, param, opt)
    return counter.get_total_flops()


def measure(clf, method: str, chunk: int, steps: int, width: float, device: torch.device) -> dict[str, float]:
    objs, param, opt = _setup(clf, method, chunk, width, device)
    for _ in range(2):  # warm-up
        _step(clf, objs, param, opt)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        _step(clf, objs, param, opt)
    if device.type == "cuda":
        torch.cuda.synchronize()
    sec = (time.perf_counter() - t0) / steps
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"sec_per_step": sec, "target_steps_per_s": chunk / sec, "peak_gib": mem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", default="efficientnet-lite0")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--methods", default="pretrained,scratch,pixel")
    ap.add_argument("--chunks", default="1,16")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after 2 warm-up steps)")
    ap.add_argument("--width", type=float, default=0.25, help="generator width (1.0: the paper's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for the fraction reached")
    args = ap.parse_args()
    device = pick_device(args.device)
    clf = load_classifier(args.classifier, args.weights).to(device)
    chunks = [int(c) for c in args.chunks.split(",")]
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), "
          f"classifier {args.classifier} ({args.weights}) at {clf.input_size}px, G width {args.width}, torch {torch.__version__}")
    print(f"{'method':<11}{'chunk':>6}{'s/step':>10}{'tgt-steps/s':>13}{'GFLOP/step':>12}{'TFLOP/s':>9}{'of peak':>9}{'peak GiB':>10}")
    for method in args.methods.split(","):
        base = None
        per_target = flop_per_target_step(clf, method, args.width, device)
        for chunk in chunks:
            r = measure(clf, method, chunk, args.steps, args.width, device)
            r["flop_per_step"] = per_target * chunk
            tflops = r["flop_per_step"] / r["sec_per_step"] / 1e12
            frac = f"{tflops / args.peak_tflops:.1%}" if args.peak_tflops else "-"
            print(f"{method:<11}{chunk:>6}{r['sec_per_step']:>10.3f}{r['target_steps_per_s']:>13.2f}"
                  f"{r['flop_per_step'] / 1e9:>12.1f}{tflops:>9.3f}{frac:>9}{r['peak_gib']:>10.2f}", flush=True)
            base = base or r["target_steps_per_s"]
            if chunk != chunks[0]:
                print(f"{'':<11}ratio chunk {chunk} / chunk {chunks[0]}: {r['target_steps_per_s'] / base:.2f}x", flush=True)


if __name__ == "__main__":
    main()
