"""Any model: timm CNNs and vision transformers, a user's python: model, saved TorchScript and
torch.export models, and label sets of their own, through `atlas generate` and the loader."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from atlas.classifier import load, tokens_to_map
from atlas.classifier_spec import ClassifierSpec, read_class_names
from atlas.cli import main
from atlas.errors import AtlasError

TESTS = Path(__file__).resolve().parent
TEN = [f"bird {k}" for k in range(10)]
MEAN = (0.5, 0.5, 0.5)


@pytest.fixture()
def user_model_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/ on the import path, as PYTHONPATH puts it for the workflow's jobs."""
    monkeypatch.syspath_prepend(str(TESTS))
    yield
    sys.modules.pop("user_model", None)


def classes_file(tmp_path: Path, names: list[str] = TEN) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(names) + "\n")
    return path


def generate(capsys, out: Path, *args: str) -> tuple[int, str, pd.DataFrame | None]:
    code = main(["generate", "--method", "pixel", "--out", str(out), "--batch-size", "4", *args])
    err = capsys.readouterr().err
    records = pd.read_parquet(out / "records.parquet") if code == 0 else None
    return code, err, records


def test_a_timm_cnn_draws_classes_and_filters(tmp_path, capsys) -> None:
    code, err, records = generate(
        capsys,
        tmp_path / "out",
        "--classifier",
        "timm:resnet18",
        "--weights",
        "random",
        "--targets",
        "class:3,500;filter:layer2:0",
        "--steps",
        "2",
        "--image-size",
        "64",
    )
    assert code == 0, err
    assert list(records["target_id"]) == ["class-0003", "class-0500", "filter-layer2-0000"]
    assert list(records["label"][:2]) == ["tiger shark", "cliff dwelling"]  # ImageNet-1k, the default label set
    assert records["image_size"].tolist() == [64, 64, 64]
    assert not records["failed"].any()


def test_a_vit_draws_at_its_declared_size_with_its_own_classes(tmp_path, capsys) -> None:
    code, err, records = generate(
        capsys,
        tmp_path / "out",
        "--classifier",
        "timm:vit_tiny_patch16_224",
        "--weights",
        "random",
        "--classes",
        str(classes_file(tmp_path)),
        "--targets",
        "class:9;pair:1+2;filter:blocks.3:5",
        "--steps",
        "2",
    )
    assert code == 0, err
    assert records["image_size"].tolist() == [224, 224, 224]
    assert records["label"].tolist()[0] == "bird 9"
    assert all(0 <= k < 10 for top in records["top5"] for k in top)


def test_the_methods_draw_at_the_size_the_model_declares(tmp_path, capsys) -> None:
    from PIL import Image

    out = tmp_path / "out"
    code = main(
        [
            "generate",
            "--method",
            "fourier",
            "--classifier",
            "timm:vit_tiny_patch16_384",
            "--weights",
            "random",
            "--targets",
            "class:1",
            "--steps",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    records = pd.read_parquet(out / "records.parquet")
    assert records["image_size"].tolist() == [384]
    with Image.open(out / records["image"].iloc[0]) as im:
        assert im.size == (384, 384)


def test_a_vit_filter_draws_an_image_whose_channel_activation_rises(tmp_path, capsys) -> None:
    """The same seed, so the same start: after 1 step and after 30, the channel's mean over the
    patch tokens of the saved image (the records' activation)."""
    acts = []
    for steps in (1, 30):
        code, err, records = generate(
            capsys,
            tmp_path / f"steps{steps}",
            "--classifier",
            "timm:vit_tiny_patch16_224",
            "--weights",
            "random",
            "--targets",
            "filter:blocks.6:7",
            "--steps",
            str(steps),
            "--set",
            "transforms=false",
        )
        assert code == 0, err
        acts.append(float(records["activation"].iloc[0]))
    assert acts[1] > acts[0] + 0.5, acts


def test_token_layers_are_the_patch_tokens_in_their_grid() -> None:
    c = load(ClassifierSpec("timm:vit_tiny_patch16_224", "random", image_size=64))
    assert c.prefix_tokens == 1 and c.input_size == 64
    assert c.layers["blocks.0"] == 192 and "patch_embed.proj" in c.layers
    assert not any(name.endswith(("q_norm", "k_norm")) for name in c.layers)  # attention internals
    x = torch.randn(2, 3, 64, 64)
    acts = c.forward(x, layers=["blocks.2"], need_logits=False)
    assert acts.features["blocks.2"].shape == (2, 192, 4, 4)
    # The hook's map is the block's output without the class token, patches in row order.
    seq = {}
    handle = c.model.blocks[2].register_forward_hook(lambda _m, _i, out: seq.setdefault("out", out))
    c.model(x)
    handle.remove()
    assert torch.equal(acts.features["blocks.2"].flatten(2).transpose(1, 2), seq["out"][:, 1:])
    assert tokens_to_map(torch.zeros(1, 7, 3), 1).shape == (1, 3, 1, 6)  # not a square: one row


def test_a_python_model_with_a_classes_file(tmp_path, capsys, user_model_path) -> None:
    code, err, records = generate(
        capsys,
        tmp_path / "out",
        "--classifier",
        "python:user_model:ten_classes",
        "--classes",
        str(classes_file(tmp_path)),
        "--image-size",
        "32",
        "--mean",
        "0.5,0.5,0.5",
        "--std",
        "0.25,0.25,0.25",
        "--targets",
        "class:0,9;filter:conv2:3",
        "--steps",
        "2",
    )
    assert code == 0, err
    assert records["label"].tolist()[:2] == ["bird 0", "bird 9"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classifier", "python:user_model:ten_classes"], "does not declare its input; set classifier.image_size"),
        (
            ["--classifier", "python:no_such_module:f", *["--image-size", "32", "--mean", "0,0,0", "--std", "1,1,1"]],
            "cannot import module 'no_such_module'",
        ),
        (
            [
                "--classifier",
                "python:user_model:not_a_model",
                *["--image-size", "32", "--mean", "0,0,0", "--std", "1,1,1"],
            ],
            "returned a str, not a torch.nn.Module",
        ),
        (
            [
                "--classifier",
                "python:user_model:ten_classes",
                *["--image-size", "32", "--mean", "0,0,0", "--std", "1,1,1"],
            ],
            "returns (2, 10) for 2 images, not (2, 1000) logits",
        ),
        (["--classifier", "timm:no_such_net", "--weights", "random"], "unknown timm model 'no_such_net'"),
        (["--classifier", "timm:resnet18", "--weights", "random", "--mean", "1,2"], "is not three numbers"),
        (["--classifier", "mymodel"], "unknown classifier 'mymodel'; use one of"),
        (
            ["--classifier", "timm:vit_tiny_patch16_224", "--weights", "random", "--targets", "filter:blocks.99:0"],
            "unknown layer 'blocks.99' for timm:vit_tiny_patch16_224; valid layers: patch_embed.proj",
        ),
    ],
)
def test_bad_models_are_one_line_errors_with_nothing_written(tmp_path, capsys, user_model_path, args, message) -> None:
    out = tmp_path / "out"
    targets = [] if "--targets" in args else ["--targets", "class:1"]
    code = main(["generate", "--method", "pixel", "--steps", "1", "--out", str(out), *targets, *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_state_dict_file_loads_as_pt_and_safetensors_and_a_pickle_is_refused(tmp_path) -> None:
    from safetensors.torch import save_file

    ref = load(ClassifierSpec("timm:resnet18", "random"), seed=3)
    state = ref.model.state_dict()
    torch.save(state, tmp_path / "w.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    x = torch.randn(1, 3, 64, 64)
    for name in ("w.pt", "w.safetensors"):
        c = load(ClassifierSpec("timm:resnet18", str(tmp_path / name)), seed=0)
        assert torch.equal(c.model(x), ref.model(x)), name
    torch.save({"model": ref.model}, tmp_path / "pickled.pt")  # a pickled module, not a state dict
    with pytest.raises(AtlasError, match="cannot read weights file .*pickled.pt"):
        load(ClassifierSpec("timm:resnet18", str(tmp_path / "pickled.pt")))


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_saved_models_serve_class_targets_and_refuse_filters(tmp_path, kind, user_model_path) -> None:
    from user_model import ten_classes

    torch.manual_seed(0)
    model = ten_classes().eval()
    path = tmp_path / f"model.{kind}"
    if kind == "torchscript":
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; files of it are still loaded
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(torch.jit.script(model), path)
    else:
        batch = torch.export.Dim("batch", min=1, max=64)
        torch.export.save(torch.export.export(model, (torch.zeros(2, 3, 32, 32),), dynamic_shapes=({0: batch},)), path)
    spec = ClassifierSpec.of(f"{kind}:{path}", image_size=32, mean=MEAN, std=MEAN, classes=str(classes_file(tmp_path)))
    c = load(spec)
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(c.forward(x).logits, model(x), atol=1e-5)
    assert c.layers == {}
    with pytest.raises(AtlasError, match=f"has no filter layers: a {kind} file's layers cannot be hooked"):
        c.resolve_layer("conv1")


def test_classes_files() -> None:
    with pytest.raises(AtlasError, match="line 2 is empty"):
        read_class_names(_write("a\n\nb\n"))
    with pytest.raises(AtlasError, match="names 1 class"):
        read_class_names(_write("a\n"))
    assert read_class_names(_write("a\nb \n\n")) == ["a", "b"]


def _write(text: str) -> Path:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(text)
    return Path(f.name)


def test_timm_weights_with_other_classes_than_the_classes_file_are_refused(tmp_path) -> None:
    with pytest.raises(AtlasError, match="efficientnet-lite0: the shipped ImageNet-1k weights have 1000 classes"):
        load(ClassifierSpec("efficientnet-lite0", classes=str(classes_file(tmp_path))))


def test_a_timm_batchnorm_with_its_activation_is_not_folded_away(caplog) -> None:
    """timm's BatchNormAct2d applies its activation after the affine map: folding it into the
    convolution would drop the activation, so it stays (and nothing is reported as refused)."""
    from timm.layers import BatchNormAct2d

    from atlas.fold import fold_batchnorm

    c = load(ClassifierSpec("timm:test_efficientnet", "random"))
    assert any(isinstance(m, BatchNormAct2d) for m in c.model.modules())
    x = torch.randn(2, 3, c.input_size, c.input_size)
    before = c.model(x)
    assert fold_batchnorm(c.model, c.input_size) == 0
    assert torch.equal(c.model(x), before)
    assert "not folded" not in caplog.text
