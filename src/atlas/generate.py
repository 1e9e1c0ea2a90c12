"""`atlas generate`: preferred inputs for a list of targets, one PNG each, plus records.parquet.

Targets run in batches of `batch_size`, each batch one optimisation. A batch that runs out of the
device's memory is run again as two halves (each target's `chunk_size` record says how many
targets it ran with), so a batch size too large for a GPU costs time, not the job. The output folder is
built under a temporary name and renamed into place when every chunk is done, so an interrupted
run leaves nothing behind.

Display mapping of every PNG: the image in D's input space is mapped back to RGB with D's own
normalisation (`rgb = x * std + mean`), clipped to [0, 1], and rounded to 8 bits. Scores in the
records are D's on that saved image (`atlas.image_scores`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from atlas.classifier import Classifier
from atlas.dataset import load_dataset, recorded_sha256
from atlas.errors import AtlasError
from atlas.generator import Decoder, load_decoder
from atlas.image_scores import Scores, score
from atlas.io import atomic_dir, write_parquet, write_text
from atlas.metadata import classifier_record, file_sha256, software
from atlas.methods import INPUTS, Build, MethodSettings, listed, taking
from atlas.methods import get as get_method
from atlas.objectives import target_objective
from atlas.optimise import optimise
from atlas.parameterise import Parameterisation, photo_magnitude
from atlas.pixels import dequantise, quantise
from atlas.runtime import Runtime, check_runtime, resolve_runtime
from atlas.schema import RECORDS
from atlas.targets import Target, check_targets
from atlas.transforms import RandomTransforms, TransformSpec

log = logging.getLogger(__name__)

# What a target whose loss goes NaN does: fail the run (nothing written) or record it as failed.
ON_NAN = ("fail", "record")
# Loss curves are stored subsampled to at most this many points per image.
_CURVE_POINTS = 250


@dataclass(frozen=True)
class GenerateConfig:
    settings: MethodSettings
    seed: int = 0
    batch_size: int = 8  # targets optimised at once (`--batch-size`)
    decoder: str | None = None  # path, or "random" (pretrained only)
    image_size: int | None = None  # D's input size override
    on_nan: str = "fail"  # fail: error, nothing written; record: failed rows, no PNG
    # How the steps run (atlas.runtime): auto resolves per device (bf16 + channels-last on CUDA).
    precision: str = "auto"  # auto | fp32 | bf16
    channels_last: str = "auto"  # auto | on | off
    compile: bool = False
    fold_bn: str = "auto"  # auto | on | off: D's BatchNorm folded into its convolutions (auto: on)
    spectrum: str | None = None  # maco: an extracted dataset folder whose photos give the magnitude
    # Target id -> attempt number (0, the first, when absent): a target whose loss went NaN is
    # tried again with the seed of its next attempt (`Target.seed`).
    attempts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise AtlasError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.image_size is not None and not 32 <= self.image_size <= 1024:
            raise AtlasError(f"--image-size {self.image_size} is out of range; use 32..1024 pixels")
        if self.on_nan not in ON_NAN:
            raise AtlasError(f"--on-nan takes {' or '.join(ON_NAN)}, not {self.on_nan!r}")
        check_runtime(self.precision, self.channels_last, self.fold_bn)
        if any(k < 0 for k in self.attempts.values()):
            raise AtlasError("an attempt number is 0 (the first) or more; fix --attempt")

    def attempt(self, target: Target) -> int:
        return self.attempts.get(target.id, 0)


def _check_input(cfg: GenerateConfig, name: str, given: object) -> bool:
    """Whether the method takes the input `name` (INPUTS); an input given to a method that does not
    take it, or a required one missing, is an AtlasError naming the flag."""
    method, flag = cfg.settings.method, INPUTS[name].flag
    if name not in get_method(method).inputs:
        if given is not None:
            raise AtlasError(f"{flag} is for the {listed(taking(name))} method, not {method}; drop it")
        return False
    return True


def resolve_decoder(cfg: GenerateConfig) -> Decoder | None:
    """The decoder of a method that takes one: a file from `atlas train-dae`, or a seeded random one."""
    if not _check_input(cfg, "decoder", cfg.decoder):
        return None
    if cfg.decoder is None:
        raise AtlasError(
            f"the {cfg.settings.method} method needs --decoder PATH (from `atlas train-dae`) or --decoder random "
            "(an untrained decoder, for tests)"
        )
    if cfg.decoder == "random":
        gen = torch.Generator().manual_seed(cfg.seed)
        decoder = Decoder(width=cfg.settings.width)
        decoder.init_copy(0, gen)
        return decoder
    return load_decoder(cfg.decoder)


def resolve_magnitude(cfg: GenerateConfig, size: int) -> torch.Tensor | None:
    """The fixed magnitude spectrum of a method that takes the dataset's photos: their mean amplitude
    spectrum, from an extracted dataset (`atlas extract`), or None (the 1/f law) when no dataset
    is given."""
    if not _check_input(cfg, "spectrum", cfg.spectrum) or cfg.spectrum is None:
        return None
    images, _ = load_dataset(cfg.spectrum)
    sums: torch.Tensor | None = None
    for start in range(0, len(images), 64):
        # A copy: the dataset is memory-mapped read-only, and torch warns on a read-only array.
        rgb = torch.from_numpy(np.array(images[start : start + 64])).permute(0, 3, 1, 2).float() / 255.0
        part = photo_magnitude(rgb, size) * len(rgb)
        sums = part if sums is None else sums + part
    assert sums is not None  # load_dataset refuses an empty dataset
    log.info(
        "%s magnitude: the mean amplitude spectrum of %d photos of %s", cfg.settings.method, len(images), cfg.spectrum
    )
    return sums / len(images)


def _parameterisation(
    cfg: GenerateConfig,
    classifier: Classifier,
    seeds: list[int],
    decoder: Decoder | None,
    magnitude: torch.Tensor | None,
    device: torch.device,
) -> Parameterisation:
    """The batch's parameterisation, built by its method's module (atlas.methods)."""
    method = get_method(cfg.settings.method)
    resolved = {"decoder": decoder, "spectrum": magnitude}
    inputs = {name: resolved[name] for name in method.inputs}
    return method.build(Build(cfg.settings, seeds, classifier.input_size, classifier.normalise, device, inputs))


def random_transforms(
    settings: MethodSettings, classifier: Classifier, seeds: list[int], device: torch.device
) -> RandomTransforms | None:
    """The batch's transformation robustness (lucid's standard set), or None when it is off."""
    if not settings.transforms:
        return None
    grey = classifier.normalise(torch.full((1, 3, 1, 1), 0.5)).flatten()
    spec = (
        TransformSpec.crops(settings.crop, settings.rotate)
        if settings.crop > 0
        else TransformSpec(rotate=settings.rotate)
    )
    return RandomTransforms(spec, seeds, grey, device, classifier.input_size)


def _curve(loss: torch.Tensor) -> list[float]:
    step = max(1, -(-len(loss) // _CURVE_POINTS))
    return [float(v) for v in loss[::step]]


def generate(
    classifier: Classifier,
    targets: Sequence[Target],
    cfg: GenerateConfig,
    out: Path,
    device: torch.device,
) -> pd.DataFrame:
    """Generate every target into `out` (replaced as a whole) and return the records."""
    check_targets(targets, classifier)
    if out.exists() and any(out.iterdir()) and not (out / RECORDS).exists():
        if not unfinished_chunk(out):
            raise AtlasError(f"output folder {out} exists and is not an Atlas output; choose an empty or new folder")
        # A chunk published by a job that was already declared failed (its process outlived it):
        # the workflow then deleted the records and run.json, not the PNGs. Replaced whole.
        log.warning("%s holds images of a chunk without its records (an unfinished run): replacing it", out)
    earlier = _earlier_attempts(out / RECORDS, cfg)
    decoder = resolve_decoder(cfg)
    magnitude = resolve_magnitude(cfg, classifier.input_size)
    runtime = resolve_runtime(cfg.precision, cfg.channels_last, cfg.compile, device, cfg.fold_bn)
    hooked = {t.layer for t in targets if t.layer is not None}
    classifier.to(device).prepare(runtime.channels_last, runtime.compile, runtime.fold_bn, keep=hooked)
    log.info("runtime on %s: %s", device, runtime.as_dict())
    s = cfg.settings
    rows: list[dict[str, object]] = []
    with (
        atomic_dir(out) as tmp,
        tqdm(
            total=len(targets) * s.steps,
            unit="step",
            desc=f"{s.method} {len(targets)} targets",
            mininterval=0.5 if sys.stderr.isatty() else 10.0,
            disable=None,
        ) as bar,
    ):
        pending = [list(targets[i : i + cfg.batch_size]) for i in range(0, len(targets), cfg.batch_size)]
        while pending:
            batch = pending.pop(0)
            counted = bar.n
            try:
                rows.extend(_run_batch(batch, cfg, classifier, decoder, magnitude, runtime, device, bar, tmp))
            except torch.OutOfMemoryError:
                if len(batch) == 1:
                    raise AtlasError(
                        f"one target ({batch[0].id}) does not fit in {device}'s memory; lower --width or "
                        "--image-size, or use a device with more memory"
                    ) from None
                half = (len(batch) + 1) // 2
                pending[:0] = [batch[:half], batch[half:]]
                log.warning(
                    "a batch of %d targets ran out of %s memory: running it as %d + %d",
                    len(batch),
                    device,
                    half,
                    len(batch) - half,
                )
                bar.n = counted
                bar.refresh()
            if pending and device.type == "cuda":
                torch.cuda.empty_cache()  # what the failed batch held (its traceback is gone now)
            done = sum(r["failed"] is False for r in rows)
            log.info("%d/%d targets done (%d ok)", len(rows), len(targets), done)
        records = pd.DataFrame(rows)
        records["earlier_attempts"] = [json.dumps(earlier.get(str(t), [])) for t in records["target_id"]]
        failed = records[records["failed"]]
        if len(failed) and cfg.on_nan == "fail":
            first = failed.iloc[0]
            raise AtlasError(
                f"{len(failed)} target(s) failed, first {first['target_id']}: {first['reason']}; "
                "lower the learning rate (--set lr=...), or pass --on-nan record to keep the others"
            )
        write_parquet(records, tmp / RECORDS)
        provenance = _provenance(classifier, cfg, decoder, device, len(targets), runtime)
        write_text(tmp / "run.json", json.dumps(provenance, indent=2))
    log.info("wrote %d images and %s to %s", int((~records["failed"]).sum()), RECORDS, out)
    return records


_CHUNK_FILE = re.compile(r"(class|pair|group|filter)-[^/]+\.png|run\.json")


def unfinished_chunk(out: Path) -> bool:
    """True when every entry of the folder `out` is a file that `atlas generate` writes into a
    chunk (a target's PNG, run.json): what is left of a chunk whose records were removed."""
    entries = list(out.iterdir())
    return bool(entries) and all(e.is_file() and not e.is_symlink() and _CHUNK_FILE.fullmatch(e.name) for e in entries)


def _earlier_attempts(records: Path, cfg: GenerateConfig) -> dict[str, list[dict[str, object]]]:
    """What the earlier attempts of the targets being tried again recorded: read from the records
    this run replaces (the workflow keeps them while the chunk reruns). Target id -> the list of
    {attempt, seed, reason} of every earlier attempt that failed, oldest first."""
    if not any(cfg.attempts.values()) or not records.is_file():
        return {}
    try:
        old = pd.read_parquet(records).to_dict("records")
    except Exception:  # unreadable: the history is lost, the retry still runs
        log.warning("cannot read %s: the earlier attempts' reasons are not carried over", records)
        return {}
    out: dict[str, list[dict[str, object]]] = {}
    for row in old:
        target, now = str(row["target_id"]), cfg.attempts.get(str(row["target_id"]), 0)
        if now == 0:
            continue
        history = json.loads(row.get("earlier_attempts") or "[]")
        before = int(row.get("attempt", 0) or 0)
        if before < now and row["failed"]:
            history.append({"attempt": before, "seed": int(row["seed"]), "reason": row["reason"]})
        out[target] = history
    return out


def _run_batch(
    batch: list[Target],
    cfg: GenerateConfig,
    classifier: Classifier,
    decoder: Decoder | None,
    magnitude: torch.Tensor | None,
    runtime: Runtime,
    device: torch.device,
    bar: tqdm,
    tmp: Path,
) -> list[dict[str, object]]:
    """One batched optimisation of `batch`: its PNGs into `tmp`, its records returned."""
    s = cfg.settings
    seeds = [t.seed(cfg.seed, cfg.attempt(t)) for t in batch]
    t0 = time.perf_counter()
    param = _parameterisation(cfg, classifier, seeds, decoder, magnitude, device)
    param.prepare(runtime)
    objectives = [target_objective(t, s.penalty, s.target_relu, s.filter_penalty) for t in batch]
    transforms = random_transforms(s, classifier, seeds, device)
    result = optimise(classifier, objectives, param, s, progress=bar, runtime=runtime, transforms=transforms)
    pixels = quantise(classifier, result.images)
    scores = score(classifier, batch, dequantise(classifier, pixels).to(device))
    seconds = (time.perf_counter() - t0) / len(batch)
    rows = []
    for b, t in enumerate(batch):
        reason = result.failed[b]
        image = None
        if reason is None:
            image = f"{t.id}.png"
            Image.fromarray(pixels[b].numpy()).save(tmp / image, format="PNG")
        rows.append(
            _record(
                t, b, cfg, classifier, scores, result.loss[:, b], seeds[b], seconds, image, reason, len(batch), runtime
            )
        )
    return rows


def _record(
    t: Target,
    b: int,
    cfg: GenerateConfig,
    classifier: Classifier,
    scores: Scores,
    loss: torch.Tensor,
    seed: int,
    seconds: float,
    image: str | None,
    reason: str | None,
    batch: int,
    runtime: Runtime,
) -> dict[str, object]:
    s = cfg.settings
    ok = reason is None
    finite = loss[torch.isfinite(loss)]
    return {
        "target_id": t.id,
        "kind": t.kind,
        "seed_index": t.seed_index,
        "method": s.method,
        "classifier": classifier.name,
        "class_index": t.classes[0] if t.kind == "class" else None,
        "classes": list(t.classes),
        "label": t.label(classifier.class_names),
        "layer": t.layer,
        "channel": t.channels[0] if t.kind == "filter" and len(t.channels) == 1 else None,
        "channels": list(t.channels),
        "activation": float(scores.activation[b]) if ok else float("nan"),
        "prob": float(scores.prob[b]) if ok else float("nan"),
        "rank": int(scores.rank[b]) if ok else -1,
        "top5": [int(c) for c in scores.top5[b]] if ok else [],
        "top1_label": classifier.class_names[int(scores.top5[b][0])] if ok else None,
        "final_loss": float(finite[-1]) if len(finite) else float("nan"),
        "loss_curve": _curve(loss),
        "steps": s.steps,
        "seed": seed,
        "run_seed": cfg.seed,
        "attempt": cfg.attempt(t),
        "seconds": seconds,
        "chunk_size": batch,
        "precision": runtime.precision,
        "channels_last": runtime.channels_last,
        "compiled": runtime.compile,
        "image": image,
        "image_size": classifier.input_size,
        "failed": not ok,
        "reason": reason,
    }


def _provenance(
    classifier: Classifier,
    cfg: GenerateConfig,
    decoder: Decoder | None,
    device: torch.device,
    n: int,
    runtime: Runtime,
) -> dict[str, object]:
    return {
        **software(),
        "argv": sys.argv,
        "device": str(device),
        "classifier": classifier_record(classifier),
        "decoder": {
            "path": cfg.decoder,
            "sha256": file_sha256(cfg.decoder) if cfg.decoder not in (None, "random") else None,
            "width": decoder.width if decoder is not None else None,
        },
        "spectrum": {
            "dataset": cfg.spectrum,
            "sha256": recorded_sha256(cfg.spectrum) if cfg.spectrum is not None else None,
        },
        "settings": cfg.settings.as_dict(),
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "targets": n,
        "on_nan": cfg.on_nan,
        "attempts": {t: k for t, k in sorted(cfg.attempts.items()) if k},
        "runtime": runtime.as_dict(),
        "runtime_requested": {
            "precision": cfg.precision,
            "channels_last": cfg.channels_last,
            "compile": cfg.compile,
            "fold_bn": cfg.fold_bn,
        },
    }
