"""How to batch the scratch method's B independent generators: grouped convs vs the alternatives.

    uv run python benchmarks/scratch_batching.py                       # CPU, width 0.25, chunk 16
    uv run python benchmarks/scratch_batching.py --device cuda --width 1.0 --chunk 32

One forward + backward of B independent G (the scratch method's G part of a step; D is the same
for every variant) through each way of batching their convolutions:

- grouped: the B copies side by side in the channels of a batch of one, `groups=B` (what
  `atlas.generator.Decoder(copies=B)` does);
- vmap:    `torch.func.vmap` of a lone conv over the copies' weights and inputs;
- bmm:     im2col (`F.unfold`) and one batched matmul per layer;
- loop:    B lone convolutions one after the other (no batching; the reference).

Every variant computes the same thing: it prints each variant's largest difference from the
grouped output, its seconds per forward+backward and its speed relative to grouped. A benchmark,
not a test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _bench import describe_device, sync
from torch import nn

from atlas.generator import FEATURES, SEED_SHAPE, Decoder, _ConvBN
from atlas.runtime import pick_device

ConvFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def _grouped(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, copies: int) -> torch.Tensor:
    y = F.conv2d(x.reshape(1, -1, *x.shape[-2:]), w, b, groups=copies)
    return y.reshape(copies, -1, *y.shape[-2:])


def _vmap(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, copies: int) -> torch.Tensor:
    wb = w.reshape(copies, -1, *w.shape[1:])
    bb = b.reshape(copies, -1)
    return torch.func.vmap(lambda xi, wi, bi: F.conv2d(xi[None], wi, bi)[0])(x, wb, bb)


def _bmm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, copies: int) -> torch.Tensor:
    k = w.shape[-1]
    cols = F.unfold(x, k)  # (B, Cin*k*k, L)
    wb = w.reshape(copies, -1, w.shape[1] * k * k)
    y = torch.bmm(wb, cols) + b.reshape(copies, -1, 1)
    side = x.shape[-1] - k + 1
    return y.reshape(copies, -1, side, side)


def _loop(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, copies: int) -> torch.Tensor:
    wb = w.reshape(copies, -1, *w.shape[1:])
    bb = b.reshape(copies, -1)
    return torch.cat([F.conv2d(x[i : i + 1], wb[i], bb[i]) for i in range(copies)])


VARIANTS: dict[str, ConvFn] = {"grouped": _grouped, "vmap": _vmap, "bmm": _bmm, "loop": _loop}


def forward(decoder: Decoder, f: torch.Tensor, conv: ConvFn) -> torch.Tensor:
    """Decoder(copies=B)'s forward with its convolutions done by `conv` on (B, C, H, W)."""
    copies = decoder.copies
    x = f.reshape(copies, *SEED_SHAPE)
    for layer in decoder.layers:
        if not isinstance(layer, _ConvBN):
            x = layer(x)
            continue
        y = torch.relu(conv(layer.pad(x), layer.conv.weight, layer.conv.bias, copies))
        # Train-mode BatchNorm of each copy over its own image: the grouped decoder's batch of one.
        y = F.batch_norm(
            y.reshape(1, -1, *y.shape[-2:]), None, None, layer.bn.weight, layer.bn.bias, training=True, eps=layer.bn.eps
        )
        x = y.reshape(copies, -1, *y.shape[-2:])
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=0.25, help="generator width (1.0: the paper's)")
    ap.add_argument("--chunk", type=int, default=16, help="independent generators (targets) at once")
    ap.add_argument("--steps", type=int, default=3, help="timed forward+backward passes (after 1 warm-up)")
    ap.add_argument("--variants", default="grouped,vmap,bmm,loop")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device)
    gen = torch.Generator().manual_seed(0)
    decoder = Decoder(width=args.width, copies=args.chunk)
    for b in range(args.chunk):
        decoder.init_copy(b, gen)
    decoder.to(device).train()
    alpha = nn.Parameter(torch.rand(args.chunk, FEATURES, generator=gen).to(device))
    print(f"{describe_device(device)}; G width {args.width}, chunk {args.chunk}, torch {torch.__version__}")
    with torch.no_grad():
        ref = forward(decoder, alpha, _grouped)
    print(f"{'variant':<9}{'max |diff|':>12}{'s/fwd+bwd':>11}{'vs grouped':>12}")
    base = None
    for name in args.variants.split(","):
        conv = VARIANTS[name]
        with torch.no_grad():
            diff = float((forward(decoder, alpha, conv) - ref).abs().max())
        times = []
        for i in range(args.steps + 1):
            sync(device)
            t0 = time.perf_counter()
            forward(decoder, alpha, conv).square().mean().backward()
            sync(device)
            if i:  # the first pass warms up
                times.append(time.perf_counter() - t0)
        sec = min(times)
        base = base or sec
        print(f"{name:<9}{diff:>12.2e}{sec:>11.3f}{base / sec:>11.2f}x", flush=True)


if __name__ == "__main__":
    main()
