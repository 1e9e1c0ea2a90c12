"""Synthetic atlas indexes (PNGs + a table that passes `check_index`) for the site's tests and
benchmark: no classifier, no generation; the scores are made-up numbers.

The images are flat colours with one white pixel (`style="flat"`, small files for the tests), or
like real ones in size on disk (`style="noisy"`): a generated image is a 1/f colour field (the
spectrum of natural images, which the methods' images imitate) under per-pixel colour noise of
standard deviation 0.05 (13 of 255 levels), as optimised pixels carry; an exemplar, a photo, is a
smoother field (1/f^1.5) without that noise."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from atlas.schema import INDEX_SCHEMA, PROVENANCE_KEY, check_index

METHODS = ("scratch", "pretrained", "pixel")


NOISE = 0.05  # the noisy images' per-pixel noise, in [0, 1] units


def field(size: int, seed: int, alpha: float = 1.0, noise: float = NOISE) -> Image.Image:
    """A colour field with a 1/f^alpha spectrum (each channel of std 0.18 around grey) plus
    Gaussian per-pixel noise of std `noise`: `style="noisy"`'s images."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :])
    f[0, 0] = 1.0
    spectrum = (rng.normal(size=(3, size, size)) + 1j * rng.normal(size=(3, size, size))) / f**alpha
    x = np.real(np.fft.ifft2(spectrum))
    x = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    x = x.transpose(1, 2, 0) * 0.18 + 0.5 + rng.normal(size=(size, size, 3)) * noise
    return Image.fromarray(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8))


def _png(path: Path, size: int, seed: int, style: str = "flat", photo: bool = False) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if style == "noisy":
        im = field(size, seed, alpha=1.5, noise=0.0) if photo else field(size, seed)
    else:
        rng = random.Random(seed)
        im = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
        im.putpixel((0, 0), (255, 255, 255))
    im.save(path, format="PNG")
    return path.as_posix()


def _row(target_id: str, method: str, kind: str, label: str, rng: random.Random, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {c: None for c in INDEX_SCHEMA.names}
    prob = kind != "filter"
    row.update(
        target_id=target_id,
        method=method,
        kind=kind,
        label=label,
        classes=[],
        channels=[],
        image_size=16,
        steps=20,
        seed=rng.randrange(2**31),
        run_seed=0,
        seconds=rng.random(),
        chunk_size=8,
        chunk=f"generate/{method}/{kind}/chunk-0000",
        final_loss=-rng.random() * 10,
        loss_curve=[10.0 - i * rng.random() for i in range(20)],
        failed=False,
        d_activation=rng.random() * 20,
        d_prob=rng.random() if prob else None,
        d_rank=rng.randrange(1, 50) if prob else None,
        d_top5=[1, 2, 3, 4, 5],
        d_top5_labels=["a", "b", "c", "d", "e"],
        judge="judge-net",
        judge_prob=rng.random() if prob else None,
        judge_rank=rng.randrange(1, 900) if prob else None,
        judge_top5=[5, 4, 3, 2, 1],
        judge_top5_labels=["e", "d", "c", "b", "a"],
        robust_prob=rng.random() if prob else None,
        robust_prob_min=rng.random() / 2 if prob else None,
        robust_activation=rng.random(),
        exemplars=[],
        exemplar_scores=[],
        classifier="tiny",
        classifier_sha256=None,
        judge_sha256="ab" * 32,
        decoder_sha256="cd" * 32 if method == "pretrained" else None,
        config_sha256="ef" * 32,
        atlas_version="0.1.0",
        git_commit="0" * 40,
    )
    seed = int(row["seed"])  # type: ignore[call-overload]
    row.update(saturation=(seed % 97) / 200, rms_contrast=(seed % 89) / 300, colourfulness=float(seed % 83))
    row.update(kw)
    return row


def synthetic_index(
    run_dir: Path,
    n_classes: int = 4,
    methods: Sequence[str] = METHODS,
    labels: dict[int, str] | None = None,
    failed: Sequence[tuple[str, str]] = (),
    pairs: Sequence[tuple[int, int]] = ((0, 1),),
    filters: dict[str, int] | None = None,
    n_exemplars: int = 2,
    size: int = 16,
    overrides: Mapping[tuple[str, str], Mapping[str, object]] | None = None,
    classes: Sequence[int] | None = None,
    style: str = "flat",
    seeds: int = 1,
) -> Path:
    """Write run_dir/index.parquet and its images; return the index path.

    `failed`: (method, target_id) pairs recorded as failed (no image). `filters`: layer -> channels.
    `overrides`: (method, target_id) -> column values that replace the made-up ones (set last,
    after a failed row's), for tests that need known scores. `classes`: the class indices (default
    0 .. n_classes - 1). `style`: "flat" or "noisy" images (see the module's docstring). `seeds`: the
    class targets drawn from this many seeds (the others from one), diversity 0.1 x the class.
    """
    labels = labels or {}
    filters = {"features.3": 2} if filters is None else filters
    rng = random.Random(0)
    rows = []
    bad = set(failed)
    exemplar_paths = {}
    class_list = list(range(n_classes)) if classes is None else list(classes)
    for c in class_list:
        exemplar_paths[c] = [
            _png(run_dir / "data" / "images" / f"{c:04d}_{k}.png", size, 10_000 + c * 10 + k, style, photo=True)[
                len(run_dir.as_posix()) + 1 :
            ]
            for k in range(n_exemplars)
        ]
    for m_i, method in enumerate(methods):
        targets: list[tuple[str, str, str, dict[str, object]]] = []
        for c in class_list:
            ex = exemplar_paths[c]
            targets.append(
                (
                    f"class-{c:04d}",
                    "class",
                    labels.get(c, f"class {c}"),
                    {
                        "class_index": c,
                        "classes": [c],
                        "exemplars": ex,
                        "exemplar_scores": [5.0 - k for k in range(len(ex))],
                        # the first exemplar of class 0 is a photo of it; no other class has one
                        "exemplar_classes": [0 if c == 0 and k == 0 else None for k in range(len(ex))],
                        "class_photos": 1 if c == 0 else 0,
                    },
                )
            )
        for a, b in pairs:
            targets.append(
                (
                    f"pair-{a:04d}+{b:04d}",
                    "pair",
                    f"{labels.get(a, f'class {a}')} + {labels.get(b, f'class {b}')}",
                    {"classes": [a, b]},
                )
            )
        for layer, n in filters.items():
            for ch in range(n):
                targets.append(
                    (
                        f"filter-{layer}-{ch:04d}",
                        "filter",
                        f"{layer} channel {ch}",
                        {"layer": layer, "channel": ch, "channels": [ch]},
                    )
                )
        seeded = []
        for tid, kind, label, extra in targets:
            for k in range(seeds if kind == "class" else 1):
                more = {"base_id": tid, "seed_index": k}
                if seeds > 1 and kind == "class":
                    more["diversity"] = 0.1 * int(extra["class_index"])  # type: ignore[call-overload]
                seeded.append((f"{tid}-seed{k}" if k else tid, kind, label, {**extra, **more}))
        for j, (tid, kind, label, extra) in enumerate(seeded):
            row = _row(tid, method, kind, label, rng, **extra)
            if (method, tid) in bad:
                row.update(
                    failed=True,
                    reason="the loss went NaN at step 7",
                    image=None,
                    final_loss=float("nan"),
                    d_activation=None,
                    d_prob=None,
                    d_rank=None,
                    judge_prob=None,
                    judge_rank=None,
                    robust_prob=None,
                    robust_prob_min=None,
                    robust_activation=None,
                    saturation=None,
                    rms_contrast=None,
                    colourfulness=None,
                    d_top5=[],
                    d_top5_labels=[],
                    judge_top5=[],
                    judge_top5_labels=[],
                )
            else:
                rel = f"generate/{method}/{kind}/chunk-0000/{tid}.png"
                _png(run_dir / rel, size, m_i * 100_000 + j, style)
                row["image"] = rel
            row.update((overrides or {}).get((method, tid), {}))
            rows.append(row)
    provenance = {
        "format": "atlas-index/1",
        "config": {"run": run_dir.name, "classes": f"{class_list[0]}-{class_list[-1]}" if class_list else ""},
        "config_sha256": "ef" * 32,
        "versions": {"atlas": "0.1.0", "python": "3.12"},
        "git_commit": "0" * 40,
        "classifier": {"name": "tiny", "sha256": None},
        "judge": {"name": "judge-net", "sha256": "ab" * 32},
        "decoder_sha256": "cd" * 32,
        "exemplars": {
            "candidates": 39,
            "labelled": 20,
            "sources": ["bundled"],
            "naturalness": {"photos": 39, "saturation": 0.29, "rms_contrast": 0.2, "colourfulness": 38.5},
        },
    }
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
    table = check_index(table).replace_schema_metadata({PROVENANCE_KEY: json.dumps(provenance).encode()})
    path = run_dir / "index.parquet"
    pq.write_table(table, path)
    return path
