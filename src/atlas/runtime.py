"""Where and how a stage runs: the device, and a chunk's precision, memory layout, compilation.

None of these changes what is optimised; they change how fast and with which rounding.

- `precision`: `fp32`, or `bf16` (the optimisation steps' forward and backward of D under
  `torch.autocast` in bfloat16; G, of both methods, stays fp32, see `_WithDecoder._generate`;
  parameters, optimiser state, losses, the final renders, the scores and the saved images are
  fp32). `auto`: bf16 on a CUDA device that
  supports it, fp32 otherwise (on a CPU without bf16 matrix units bf16 is slower, and fp32 keeps
  the CPU path bitwise reproducible).
- `channels_last`: `on`/`off`/`auto` (auto: on, on a GPU and on a CPU: cuDNN's and oneDNN's
  convolutions both run faster on NHWC; on this project's CPU 8-35 % less time per step, the
  scratch method's most, docs/benchmarks.md, "Speed on the CPU").
- `fold_bn`: `on`/`off`/`auto` (auto: on): D's BatchNorm layers folded into the convolutions
  before them (`atlas.fold`): the same function to float rounding, about a sixth less CPU time per
  image on EfficientNet-Lite0.
- `compile`: `torch.compile` of G and of D (D only for targets that need no layer hooks: a
  filter target's hooks would recompile it every step). An explicit opt-in on every device: it
  costs a compilation of tens of seconds to minutes per job.

What bf16 does to the images (docs/benchmarks.md, "Speed on the CPU"): per step the losses agree with fp32 to
about 1%, but in a deep ReLU network the gradient to the image does not agree elementwise (bf16
rounding flips the ReLU masks of units near zero), so with sign-like optimisers (Adam, Adamax)
trajectories part from the fp32 ones; with the pretrained method the images stay within about
one 8-bit level of fp32's (tests/test_runtime.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from atlas.errors import AtlasError

PRECISIONS = ("auto", "fp32", "bf16")
SWITCHES = ("auto", "on", "off")


@dataclass(frozen=True)
class Runtime:
    """Resolved settings for one device: what actually ran (recorded in run.json and records)."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    fold_bn: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def as_dict(self) -> dict[str, object]:
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "fold_bn": self.fold_bn,
        }

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        """The optimisation step's forward pass under this precision."""
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            yield

    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def check_runtime(precision: str, channels_last: str, fold_bn: str = "auto") -> None:
    """The requested precision, layout and folding are ones `resolve_runtime` knows (checked before any work)."""
    if precision not in PRECISIONS:
        raise AtlasError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if channels_last not in SWITCHES:
        raise AtlasError(f"channels-last takes {', '.join(SWITCHES)}, not {channels_last!r}")
    if fold_bn not in SWITCHES:
        raise AtlasError(f"fold-bn takes {', '.join(SWITCHES)}, not {fold_bn!r}")


def resolve_runtime(
    precision: str, channels_last: str, compile: bool, device: torch.device, fold_bn: str = "off"
) -> Runtime:
    """Resolve the `auto`s for `device`; refuse what the device cannot do."""
    check_runtime(precision, channels_last, fold_bn)
    cuda = device.type == "cuda"
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if precision == "auto":
        precision = "bf16" if bf16_ok else "fp32"
    elif precision == "bf16" and cuda and not bf16_ok:
        raise AtlasError(
            f"precision bf16 was asked for but {torch.cuda.get_device_name(device)} has no bf16; use --precision fp32"
        )
    layout = channels_last != "off"  # auto is on everywhere (module docstring)
    return Runtime(precision=precision, channels_last=layout, compile=bool(compile), fold_bn=fold_bn != "off")


def pick_device(name: str) -> torch.device:
    """`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`; a one-line error for anything else."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AtlasError(f"device {name} was asked for but CUDA is not available; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise AtlasError(f"unknown device {name!r}; use auto, cpu or cuda") from None
