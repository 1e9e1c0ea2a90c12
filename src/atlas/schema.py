"""The atlas index, `results/<run>/index.parquet`: its columns, their types and meaning.

One row per generated image (per target and method; failed targets included, with no image). It
is what the site is rendered from and what users query (pandas, DuckDB, Arrow). The columns come
from three places:

- the generation records (`atlas generate`, merged by `atlas collect`): what the target is and how
  the image was made, with D's scores renamed `d_*`;
- the scores of the atlas stage: D's top-5 labels, the independent judge classifier's view, the
  robustness of D's score to small jitter, scale and flip, the image's naturalness (saturation,
  contrast, colourfulness), and the exemplars (real images of the
  extracted dataset that D scores highest for the class);
- the run's provenance, the same on every row and also, complete, as JSON in the file's schema
  metadata under `PROVENANCE_KEY`.

Image paths are relative to the run folder (`results/<run>/`). Probabilities and ranks are
null for filter targets; judge and robustness columns are null for failed targets. This module is
the single definition: the index writer checks its table with `check_index`, the table in
docs/design.md ("The index") is `markdown_table()`, and a test compares the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from atlas.errors import AtlasError
from atlas.methods import listed, names, taking

INDEX_FORMAT = "atlas-index/1"
PROVENANCE_KEY = b"atlas.provenance"

# The files the stages hand on, and the Parquet schema-metadata keys under which each records (as
# JSON) what made it. `atlas index` reads all of them.
RECORDS = "records.parquet"  # a chunk's records (`atlas generate`); also the run's (`atlas collect`)
SCORES_KEY = b"atlas.scores"  # a chunk's scores.parquet (`atlas score`): the judge, D, robustness set
EXEMPLARS = "exemplars.parquet"  # `atlas exemplars`
EXEMPLARS_KEY = b"atlas.exemplars"
# The columns `atlas score` writes, keyed by (method, target_id); `atlas index` joins them to the
# records. Names and types are the index's (`INDEX_COLUMNS`).
SCORE_KEY_COLUMNS = ("method", "target_id")
SCORE_COLUMNS = (
    *SCORE_KEY_COLUMNS,
    "d_top5_labels",
    "judge",
    "judge_prob",
    "judge_rank",
    "judge_top5",
    "judge_top5_labels",
    "robust_prob",
    "robust_prob_min",
    "robust_activation",
    "saturation",
    "rms_contrast",
    "colourfulness",
    "diversity",
)

_str = pa.string()
_int = pa.int64()
_float = pa.float64()
_ints = pa.list_(pa.int64())
_floats = pa.list_(pa.float64())
_strs = pa.list_(pa.string())


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    group: str
    description: str


INDEX_COLUMNS: tuple[Column, ...] = (
    # What the image is.
    Column(
        "target_id", _str, "target", "target id: class-0009, pair-0009+0030, filter-<layer>-0003 (unique per method)"
    ),
    Column("method", _str, "target", listed(names())),
    Column("kind", _str, "target", "class, pair (two classes), group (more) or filter"),
    Column("class_index", _int, "target", "the class index of a class target; null otherwise"),
    Column(
        "classes",
        _ints,
        "target",
        "the target's class indices (one for a class, two for a pair, more for a group; empty for a filter)",
    ),
    Column(
        "label", _str, "target", "human-readable name of the target (class names joined with ' + ', or layer:channel)"
    ),
    Column("layer", _str, "target", "a filter target's layer name; null otherwise"),
    Column("channel", _int, "target", "a filter target's channel; null otherwise"),
    Column("channels", _ints, "target", "a filter target's channels; empty otherwise"),
    Column(
        "seed_index",
        _int,
        "target",
        "which of the target's seeds (0 .. the method's seeds - 1); seed k >= 1 has -seed<k> at the end of its id",
    ),
    Column("base_id", _str, "target", "the target id without its seed: the same for all of a target's seeds"),
    Column("image", _str, "target", "the PNG, relative to the run folder; null when the target failed"),
    Column("image_size", _int, "target", "the image's side in pixels (D's input size)"),
    # How it was made.
    Column("steps", _int, "generation", "optimisation steps"),
    Column("seed", _int, "generation", "the target's own seed (derived from run_seed, the target id and the attempt)"),
    Column(
        "attempt",
        _int,
        "generation",
        "which attempt made this row: 0, the first; a target whose loss went NaN is tried again by the next workflow "
        "run with a new seed, up to nan_attempts attempts (the records keep the earlier attempts' reasons)",
    ),
    Column("run_seed", _int, "generation", "the run's seed (config `seed`)"),
    Column("seconds", _float, "generation", "wall seconds of its chunk's optimisation, divided by the chunk's size"),
    Column("chunk_size", _int, "generation", "targets optimised together in its batch"),
    Column("chunk", _str, "generation", "the chunk folder that made it, relative to the run folder"),
    Column("final_loss", _float, "generation", "the loss at the last finite step"),
    Column("loss_curve", _floats, "generation", "the loss per step, subsampled to at most 250 points"),
    Column("failed", pa.bool_(), "generation", "true when the optimisation failed (e.g. the loss went NaN): no image"),
    Column("reason", _str, "generation", "why it failed; null otherwise"),
    # Scores under D, the classifier the image was generated for (on the saved 8-bit PNG).
    Column("d_activation", _float, "D", "relu(logit) summed over the target classes, or the filter's mean activation"),
    Column("d_prob", _float, "D", "softmax probability of the target classes (summed); null for a filter"),
    Column("d_rank", _int, "D", "1-based rank of the best target class among D's 1000 logits; null for a filter"),
    Column("d_top5", _ints, "D", "D's five most probable class indices"),
    Column("d_top5_labels", _strs, "D", "their class names"),
    # Scores under the judge, an independent classifier (transferability).
    Column("judge", _str, "judge", "the judge classifier's name"),
    Column("judge_prob", _float, "judge", "the judge's softmax probability of the target classes; null for a filter"),
    Column("judge_rank", _int, "judge", "1-based rank of the best target class under the judge; null for a filter"),
    Column("judge_top5", _ints, "judge", "the judge's five most probable class indices"),
    Column("judge_top5_labels", _strs, "judge", "their class names"),
    # Robustness: D's score after small transformations of the saved image.
    Column(
        "robust_prob",
        _float,
        "robustness",
        "mean of D's target probability over the transformations; null for a filter",
    ),
    Column("robust_prob_min", _float, "robustness", "its minimum over the transformations; null for a filter"),
    Column(
        "robust_activation",
        _float,
        "robustness",
        "mean of D's target activation over the transformations, divided by d_activation",
    ),
    # Naturalness of the saved image's colour and contrast (`atlas.naturalness`), to set beside the
    # same figures of the dataset's photos (the provenance's exemplars.naturalness).
    Column("saturation", _float, "naturalness", "mean HSV saturation of the image at 224 px; null when it failed"),
    Column("rms_contrast", _float, "naturalness", "standard deviation of its grey level in [0, 1]"),
    Column("colourfulness", _float, "naturalness", "Hasler and Suesstrunk's colourfulness (0-255 scale)"),
    Column(
        "diversity",
        _float,
        "judge",
        "a target drawn from several seeds: mean pairwise cosine distance of the judge's penultimate features "
        "of its seeds' images (the same on each); null with one seed",
    ),
    # Exemplars: real images of the extracted dataset that D scores highest for the target.
    Column(
        "exemplars",
        _strs,
        "exemplars",
        "PNG paths (relative to the run folder) of the top-k dataset images, best first",
    ),
    Column("exemplar_scores", _floats, "exemplars", "D's target activation on each exemplar"),
    Column(
        "exemplar_classes", _ints, "exemplars", "each exemplar's class index in the dataset; null where it has no label"
    ),
    Column(
        "class_photos",
        _int,
        "exemplars",
        "how many dataset photos are labelled with one of the target's classes; null for a filter or without exemplars",
    ),
    # Provenance (the same on every row; complete in the schema metadata).
    Column("classifier", _str, "provenance", "D's name"),
    Column(
        "classifier_sha256",
        _str,
        "provenance",
        "sha256 of D's weight file; null when it has none on disk (random weights)",
    ),
    Column("judge_sha256", _str, "provenance", "sha256 of the judge's weight file; null when none"),
    Column(
        "decoder_sha256",
        _str,
        "provenance",
        f"sha256 of the {listed(taking('decoder'))} method's decoder; null for the other methods",
    ),
    Column("config_sha256", _str, "provenance", "sha256 of the run's resolved config (JSON, sorted keys)"),
    Column("atlas_version", _str, "provenance", "the atlas package version"),
    Column(
        "git_commit", _str, "provenance", "the git commit of the code (with -dirty when modified); null outside git"
    ),
)

INDEX_SCHEMA = pa.schema([pa.field(c.name, c.type) for c in INDEX_COLUMNS])


def check_index(table: pa.Table, where: str = "the index") -> pa.Table:
    """Return `table` cast to `INDEX_SCHEMA` (in its column order), or raise naming what is off."""
    names = set(table.column_names)
    missing = [c.name for c in INDEX_COLUMNS if c.name not in names]
    extra = sorted(names - {c.name for c in INDEX_COLUMNS})
    if missing or extra:
        parts = []
        if missing:
            parts.append("lacks " + ", ".join(missing))
        if extra:
            parts.append("has unknown " + ", ".join(extra))
        raise AtlasError(
            f"{where} {' and '.join(parts)}: it is not an {INDEX_FORMAT} table; rebuild it with `atlas index`"
        )
    table = table.select([c.name for c in INDEX_COLUMNS])
    try:
        return table.cast(pa.schema([pa.field(c.name, c.type) for c in INDEX_COLUMNS], metadata=table.schema.metadata))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise AtlasError(f"{where} has a column of the wrong type ({exc}); rebuild it with `atlas index`") from exc


def markdown_table() -> str:
    """The index columns as a markdown table (docs/design.md, "The index")."""
    lines = ["| column | type | group | meaning |", "|---|---|---|---|"]
    for c in INDEX_COLUMNS:
        lines.append(f"| `{c.name}` | {c.type} | {c.group} | {c.description} |")
    return "\n".join(lines)
