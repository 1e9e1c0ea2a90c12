"""Scores of generated images: the judge, the robustness set, and `atlas score` on a real chunk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from atlas.cli import main
from atlas.errors import AtlasError
from atlas.image_scores import class_scores, diversity, logits_and_features, score
from atlas.naturalness import of_uint8
from atlas.pixels import to_input, unit_rgb
from atlas.schema import SCORES_KEY
from atlas.score import Transform, robustness, robustness_set, score_chunk
from atlas.targets import Target
from tests.tiny import constant_image, linear_classifier, make_chunk, tiny_classifier

CLASS0 = Target(kind="class", classes=(0,))


# --------------------------------------------------------------------------------------------
# The transformations


def test_shifts_move_the_content_by_whole_pixels_and_repeat_the_border() -> None:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = Transform(name="shift", dx=3, dy=-2)(x)
    # Content moves 3 px right and 2 px up: out[y, x] = in[y + 2, x - 3] where that exists.
    torch.testing.assert_close(out[:, :, :-2, 3:], x[:, :, 2:, :-3], atol=1e-5, rtol=0)
    # Pixels that come in from outside repeat the border ones.
    torch.testing.assert_close(out[:, :, :-2, 0], x[:, :, 2:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(Transform(name="id")(x), x)
    torch.testing.assert_close(Transform(name="flip", flip=True)(x), x.flip(3))


def test_zooms_keep_the_centre_and_size() -> None:
    x = torch.zeros(1, 3, 20, 20)
    x[:, :, 8:12, 8:12] = 1.0  # a centred 4 x 4 square
    bigger = Transform(name="scale(1.5)", scale=1.5)(x)
    smaller = Transform(name="scale(0.5)", scale=0.5)(x)
    assert bigger.shape == smaller.shape == x.shape
    # The square's mass grows by 1.5^2 and shrinks by 0.5^2 (bilinear resampling keeps it to 10%).
    assert bigger.sum() / x.sum() == pytest.approx(1.5**2, rel=0.1)
    assert smaller.sum() / x.sum() == pytest.approx(0.5**2, rel=0.1)
    torch.testing.assert_close(bigger, bigger.flip(3))  # still centred


def test_the_robustness_set_is_fixed_by_its_seed() -> None:
    default = robustness_set()
    assert [t.name for t in default][4:] == ["scale(0.9)", "scale(1.1)", "flip"]
    shifts = default[:4]
    assert all(t.dx or t.dy for t in shifts) and all(max(abs(t.dx), abs(t.dy)) <= 4 for t in shifts)
    assert robustness_set() == default
    assert robustness_set(seed=1)[:4] != shifts
    assert robustness_set(jitter_px=1, jitter_count=3, scales=(), flip=False, seed=5) == robustness_set(
        1, 3, [], False, 5
    )
    assert robustness_set(jitter_count=0, scales=(), flip=False) == ()


# --------------------------------------------------------------------------------------------
# Controlled values


def test_class_scores_on_hand_set_logits() -> None:
    logits = torch.tensor([[0.0, 3.0, -1.0, 1.0, 2.0, 0.5], [4.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    pair = Target(kind="pair", classes=(2, 3))
    s = class_scores(logits, [pair, CLASS0])
    probs = torch.softmax(logits, dim=1)
    assert s.prob[0] == pytest.approx(float(probs[0, 2] + probs[0, 3]))
    assert s.activation[0] == pytest.approx(1.0)  # relu(-1) + relu(1)
    assert s.rank.tolist() == [3, 1]  # class 3 is third best in row 0
    assert s.top5[0].tolist() == [1, 4, 3, 5, 0]


def test_a_judge_sees_the_png_resized_in_rgb_and_normalised_its_own_way() -> None:
    judge = linear_classifier([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [0.0, 0.0, 0.0])
    judge.mean, judge.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    rgb = constant_image([0.9, 0.5, 0.1], size=20)  # 20 px: the judge's input is 8 px
    x = to_input(judge, rgb)
    assert x.shape == (1, 3, 8, 8)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([0.8, 0.0, -0.8]))
    s = class_scores(judge.forward(x).logits, [CLASS0])
    assert s.rank.item() == 1 and s.activation.item() == pytest.approx(0.8)


def test_a_transformation_invariant_image_is_exactly_as_robust_as_it_is_probable() -> None:
    # The linear classifier sees only the channel means: a constant image is the same under every
    # shift, zoom and flip (the border is repeated), so every transformation scores it as D does.
    d = linear_classifier([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [0.0, 0.0, 0.0])
    rgb = constant_image([0.8, 0.3, 0.2], size=8)
    base = score(d, [CLASS0], d.normalise(rgb))
    rob = robustness(d, [CLASS0], rgb, robustness_set())
    assert rob.prob.item() == pytest.approx(base.prob.item(), abs=1e-6)
    assert rob.prob_min.item() == pytest.approx(base.prob.item(), abs=1e-6)
    assert rob.activation.item() == pytest.approx(1.0, abs=1e-5)


def test_the_flip_changes_nothing_for_a_mirror_symmetric_image_and_something_otherwise() -> None:
    d = tiny_classifier(size=16)
    half = torch.rand(1, 3, 16, 8, generator=torch.Generator().manual_seed(1))
    symmetric = torch.cat([half, half.flip(3)], dim=3)
    flip = (Transform(name="flip", flip=True),)
    base = score(d, [CLASS0], d.normalise(symmetric))
    rob = robustness(d, [CLASS0], symmetric, flip)
    assert rob.prob.item() == base.prob.item() and rob.prob_min.item() == base.prob.item()
    lopsided = torch.cat([half, torch.zeros_like(half)], dim=3)
    assert robustness(d, [CLASS0], lopsided, flip).prob.item() != score(d, [CLASS0], d.normalise(lopsided)).prob.item()


def test_an_empty_robustness_set_gives_no_values() -> None:
    d = tiny_classifier(size=16)
    rob = robustness(d, [CLASS0], torch.rand(1, 3, 16, 16), ())
    assert torch.isnan(rob.prob).all() and torch.isnan(rob.activation).all()


# --------------------------------------------------------------------------------------------
# `atlas score` on a chunk from `atlas generate`


@pytest.fixture(scope="module")
def chunk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chunk(tmp_path_factory.mktemp("chunk") / "chunk-0000", ["class:1,2", "pair:1+3", "filter:act:0"])


def test_score_chunk_reproduces_d_and_scores_under_the_judge(chunk: Path) -> None:
    d, judge = tiny_classifier(), tiny_classifier(seed=7, size=24)
    records = pq.read_table(chunk / "records.parquet").to_pylist()
    identity = (Transform(name="id"),)
    table = score_chunk(d, judge, chunk, identity).to_pylist()
    assert [(r["method"], r["target_id"]) for r in table] == [(r["method"], r["target_id"]) for r in records]
    for rec, row in zip(records, table, strict=True):
        assert row["d_top5_labels"] == [d.class_names[c] for c in rec["top5"]]
        assert row["judge"] == "tiny"
        if rec["kind"] == "filter":
            assert row["judge_prob"] is None and row["judge_rank"] is None and row["robust_prob"] is None
            assert row["robust_activation"] == pytest.approx(1.0, abs=1e-5)
        else:
            # Under the identity transformation, robustness is D's own score of the saved PNG.
            assert row["robust_prob"] == pytest.approx(rec["prob"], rel=1e-5)
            if rec["activation"] > 0:
                assert row["robust_activation"] == pytest.approx(1.0, abs=1e-5)
        # The judge, computed by hand from the PNG.
        pixels = torch.from_numpy(np.array(Image.open(chunk / rec["image"]).convert("RGB")))[None]
        target = Target(
            kind=rec["kind"], classes=tuple(rec["classes"]), layer=rec["layer"], channels=tuple(rec["channels"])
        )
        want = class_scores(judge.forward(to_input(judge, unit_rgb(pixels))).logits, [target])
        assert row["judge_top5"] == want.top5[0].tolist()
        assert row["judge_top5_labels"] == [judge.class_names[c] for c in want.top5[0].tolist()]
        if rec["kind"] != "filter":
            assert row["judge_prob"] == pytest.approx(float(want.prob[0]), rel=1e-5)
            assert row["judge_rank"] == int(want.rank[0])
        # The naturalness of the saved PNG, as atlas.naturalness computes it.
        nat = of_uint8(pixels.numpy())
        assert row["saturation"] == pytest.approx(float(nat.saturation[0]))
        assert row["rms_contrast"] == pytest.approx(float(nat.rms_contrast[0]))
        assert row["colourfulness"] == pytest.approx(float(nat.colourfulness[0]))


def test_a_target_drawn_from_several_seeds_gets_the_diversity_of_their_images(tmp_path: Path) -> None:
    chunk = make_chunk(tmp_path / "chunk-0000", ["class:1,2", "filter:act:0"], seeds=3)
    d, judge = tiny_classifier(), tiny_classifier(seed=7, size=24)
    rows = {r["target_id"]: r for r in score_chunk(d, judge, chunk, ()).to_pylist()}
    assert len(rows) == 9
    records = {r["target_id"]: r for r in pq.read_table(chunk / "records.parquet").to_pylist()}
    for base in ("class-0001", "class-0002", "filter-act-0000"):
        ids = [base, f"{base}-seed1", f"{base}-seed2"]
        pixels = np.stack([np.asarray(Image.open(chunk / records[i]["image"]).convert("RGB")) for i in ids])
        _, feats = logits_and_features(judge, to_input(judge, unit_rgb(torch.from_numpy(pixels))))
        assert feats is not None and feats.shape[0] == 3
        want = diversity(feats)
        assert want > 0
        assert [rows[i]["diversity"] for i in ids] == pytest.approx([want] * 3)
    one = make_chunk(tmp_path / "chunk-one", ["class:1"])
    assert score_chunk(d, judge, one, ()).to_pylist()[0]["diversity"] is None


def test_diversity_is_the_mean_pairwise_cosine_distance() -> None:
    same = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    assert diversity(same) == pytest.approx(0.0)
    assert diversity(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])) == pytest.approx((1 + 1 + 2) / 3)
    with pytest.raises(ValueError):
        diversity(same[:1])


def test_failed_targets_get_no_scores(chunk: Path, tmp_path: Path) -> None:
    import shutil

    import pandas as pd

    copy = Path(shutil.copytree(chunk, tmp_path / "chunk-0000"))
    records = pd.read_parquet(copy / "records.parquet")
    (copy / records.loc[0, "image"]).unlink()
    records.loc[0, ["image", "failed", "reason"]] = [None, True, "loss is NaN at step 2"]
    records.to_parquet(copy / "records.parquet", index=False)
    row = score_chunk(tiny_classifier(), tiny_classifier(seed=1), copy, robustness_set()).to_pylist()[0]
    assert row["judge_prob"] is None and row["judge_top5"] is None and row["robust_prob"] is None


def test_score_refuses_a_chunk_of_another_classifier_or_a_judge_of_other_classes(chunk: Path, tmp_path: Path) -> None:
    other = tiny_classifier()
    other.name = "other"
    with pytest.raises(AtlasError, match="was generated with tiny, not other"):
        score_chunk(other, tiny_classifier(), chunk, ())
    with pytest.raises(AtlasError, match=r"the judge tiny has other classes than D \(10 and 6 classes\)"):
        score_chunk(tiny_classifier(), tiny_classifier(num_classes=10), chunk, ())
    with pytest.raises(AtlasError, match="does not exist; run `atlas generate`"):
        score_chunk(tiny_classifier(), tiny_classifier(), tmp_path / "nothing", ())


def test_the_cli_writes_scores_with_their_provenance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chunk = tmp_path / "chunk-0000"
    common = ["--classifier", "torchvision:resnet18", "--weights", "random", "--image-size", "64"]
    assert (
        main(["generate", *common, "--method", "pixel", "--targets", "class:1", "--out", str(chunk), "--steps", "1"])
        == 0
    )
    out = tmp_path / "scores.parquet"
    args = [
        "score",
        "--chunk",
        str(chunk),
        *common,
        "--judge",
        "torchvision:resnet18",
        "--judge-weights",
        "random",
        "--jitter-count",
        "2",
        "--no-scale",
        "--no-flip",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    table = pq.read_table(out)
    assert table.num_rows == 1 and table.column("judge").to_pylist() == ["torchvision:resnet18"]
    info = json.loads(table.schema.metadata[SCORES_KEY])
    assert [t["name"] for t in info["robustness"]] == [
        t.name for t in robustness_set(jitter_count=2, scales=(), flip=False)
    ]
    assert info["judge"]["input_size"] == 224 and info["classifier"]["input_size"] == 64
    # Bad input: one line, exit 2, nothing written.
    bad = tmp_path / "bad.parquet"
    capsys.readouterr()
    assert (
        main(["score", "--chunk", str(tmp_path / "none"), *common, "--judge-weights", "random", "--out", str(bad)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("atlas score: error:") and "\n" not in err and not bad.exists()


def test_the_design_doc_lists_the_default_robustness_set() -> None:
    design = " ".join((Path(__file__).resolve().parents[1] / "docs" / "design.md").read_text().split())
    assert ", ".join(t.name for t in robustness_set()) in design


def test_torchvision_default_weights_are_found_in_the_hub_cache_for_their_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.models import get_model

    from atlas.classifier import load_classifier

    # A cached "download" (random weights of the right shapes), where torchvision looks first.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(get_model("resnet18", weights=None).state_dict(), cached)
    assert load_classifier("torchvision:resnet18").weights_file == str(cached)
