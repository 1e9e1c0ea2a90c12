"""What makes a run restartable: the state a checkpoint holds (`Run`), every RNG's state (so that
a resumed run draws what an uninterrupted one would), writing and reading `checkpoint.pt`, and the
comparison of a saved run's settings with the current ones."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atlas import __version__
from atlas.errors import AtlasError
from atlas.io import save_torch
from atlas.train_dae.config import CHECKPOINT_FORMAT, OUTPUTS, TrainConfig
from atlas.train_dae.networks import Autoencoder

log = logging.getLogger(__name__)

# Fields that change nothing in the result, so a resume may differ in them.
_NOT_COMPARED = ("data",)


@dataclass
class Run:
    """The state a checkpoint holds."""

    model: Autoencoder
    optimiser: torch.optim.Optimizer
    gens: dict[str, torch.Generator]
    history: list[dict[str, float]]
    epoch: int = 0  # epochs finished


def rng_state(gens: dict[str, torch.Generator]) -> dict[str, Any]:
    np_state: Any = np.random.get_state()  # a tuple (name, keys, pos, has_gauss, cached)
    py_state = random.getstate()
    return {
        "device_type": gens["device"].device.type,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # Plain ints and lists, so that the checkpoint loads with weights_only=True.
        "numpy": [np_state[0], [int(v) for v in np_state[1]], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "generators": {name: g.get_state() for name, g in gens.items()},
    }


def set_rng_state(state: dict[str, Any], gens: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    gens["cpu"].set_state(state["generators"]["cpu"])
    if state["device_type"] == gens["device"].device.type:
        gens["device"].set_state(state["generators"]["device"])
    else:
        # A CPU generator's state does not fit a CUDA one: the run goes on, with other noise draws.
        log.warning(
            "the checkpoint was written on %s, this run is on %s: the input noise continues from a fresh "
            "seed, so the result will differ slightly from an uninterrupted run",
            state["device_type"],
            gens["device"].device.type,
        )
        gens["device"].manual_seed(gens["device"].initial_seed() + 1)


def save_checkpoint(run: Run, cfg: TrainConfig, path: Path) -> None:
    save_torch(
        {
            "format": CHECKPOINT_FORMAT,
            "epoch": run.epoch,
            "config": cfg.as_dict(),
            "encoder": {k: v.detach().cpu() for k, v in run.model.encoder.state_dict().items()},
            "decoder": {k: v.detach().cpu() for k, v in run.model.decoder.state_dict().items()},
            "optimiser": run.optimiser.state_dict(),
            "rng": rng_state(run.gens),
            "history": run.history,
            "atlas": __version__,
        },
        path,
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise AtlasError(
            f"cannot read {path} ({type(exc).__name__}); delete {path.parent} to start the training over"
        ) from exc
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise AtlasError(f"{path} is not an `atlas train-dae` checkpoint; delete {path.parent} or choose another --out")
    return blob


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The settings (`TrainConfig.as_dict()`) in which a saved run and this one differ, one
    "name saved there, now now" each; empty when the run may be resumed."""
    out = []
    for f in fields(TrainConfig):
        if f.name in _NOT_COMPARED:
            continue
        if saved.get(f.name) != now.get(f.name):
            out.append(f"{f.name} {saved.get(f.name)!r} there, {now.get(f.name)!r} now")
    return out


def finished(out: Path, epochs: int, blob: dict[str, Any]) -> bool:
    """Whether the run in `out` (its checkpoint `blob`) has trained `epochs` and written every output."""
    return blob["epoch"] >= epochs and all((out / name).is_file() for name in OUTPUTS)
