"""The method registry (atlas.methods): a method is one module. The five methods in their order,
the registry without torch, a toy method added as one module flowing through the settings, the
schemas, the site's descriptions, `atlas generate` and the workflow, and no dispatch on a
method's name outside its module."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from atlas import methods
from atlas.cli import main
from atlas.errors import AtlasError
from atlas.methods import Method, get, names, schema_methods, settings_for
from atlas.site import method_descriptions
from tests.test_workflow import REPO, RUN, _env, ok, planned_jobs, snakemake, write_config

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

# One flat colour per target, its RGB optimised: a method unlike the others, so that its images
# show that its own build ran.
TOY = '''
"""A toy method: one flat colour per target, its RGB optimised."""

from __future__ import annotations

from atlas.methods import Build, Method


def build(b: Build):
    import torch
    from torch import nn

    from atlas.parameterise import Parameterisation, per_target

    class Tint(Parameterisation):
        def __init__(self) -> None:
            self.settings = b.settings
            self.batch = len(b.seeds)
            self.colour = nn.Parameter(per_target(b.seeds, lambda g: torch.randn(3, generator=g)).to(b.device))

        def parameters(self):
            return [self.colour]

        def images(self, noise: bool = True):
            rgb = torch.sigmoid(self.colour)[:, :, None, None].expand(-1, -1, b.size, b.size)
            return b.normalise(rgb)

        def regulariser(self):
            return torch.zeros(self.batch, device=self.colour.device)

    return Tint()


METHOD = Method(
    name="toy",
    order=60,
    description="one flat colour per target, its RGB optimised",
    paper={"steps": 3, "optimiser": "adam", "lr": 0.1},
    default={"steps": 2, "optimiser": "adam", "lr": 0.1},
    build=build,
)
'''


def _folder_with(tmp: Path, name: str, text: str) -> Path:
    folder = tmp / "methods"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(text))
    return folder


@pytest.fixture()
def extra_methods(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Folders of method modules registered through ATLAS_METHOD_PATH (`_register`); the registry
    is as it was afterwards."""
    folders: list[Path] = []
    path = list(methods.__path__)
    yield folders
    monkeypatch.delenv(methods.PATH_VARIABLE, raising=False)
    methods.__path__[:] = path
    package = str(Path(methods.__file__).parent)
    for name in [m for m in sys.modules if m.startswith("atlas.methods.")]:
        if not str(sys.modules[name].__file__).startswith(package):
            del sys.modules[name]
    methods.discover()


def _register(monkeypatch: pytest.MonkeyPatch, folders: list[Path], folder: Path) -> None:
    folders.append(folder)
    monkeypatch.setenv(methods.PATH_VARIABLE, str(folder))
    methods.discover()


def test_the_five_methods_in_their_order_each_its_own_module() -> None:
    # The order is the records', the index's and the site's: changing it changes the outputs.
    assert names() == ("scratch", "pretrained", "pixel", "fourier", "maco") == methods.METHODS
    for m in methods.registry():
        assert m.build.__module__ == f"atlas.methods.{m.name}"
        assert (Path(methods.__file__).parent / f"{m.name}.py").is_file()
        for preset in methods.PRESETS:
            s = settings_for(m.name, preset)
            assert s.method == m.name and s.reg in m.regularisers
    assert get("pretrained").inputs == ("decoder",) and get("maco").inputs == ("spectrum",)
    assert methods.taking("decoder") == ("pretrained",)


def test_the_registry_imports_without_torch() -> None:
    code = "import sys, atlas.methods, atlas.schema, atlas.config_docs; assert 'torch' not in sys.modules, 'torch'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_a_method_that_misdeclares_itself_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra_methods: list[Path]
) -> None:
    def make(**changes: Any) -> Method:
        fields: dict[str, Any] = dict(
            name="toy", order=60, description="d", paper={"steps": 1, "optimiser": "adam", "lr": 0.1}
        )
        fields["default"] = fields["paper"]
        return Method(build=lambda b: None, **(fields | changes))  # type: ignore[arg-type,return-value]

    for changes, message in (
        ({"name": "Toy-1"}, "lower-case letters and digits"),
        ({"description": "two\nlines"}, "one-line description"),
        ({"regularisers": ("l3",)}, "regularisers"),
        ({"inputs": ("weights",)}, "inputs"),
    ):
        with pytest.raises(AtlasError, match=message):
            make(**changes)
    # A preset with a regulariser the method cannot apply, a clash of order, a module without METHOD.
    bad = _folder_with(tmp_path, "toy", TOY.replace('"lr": 0.1}', '"lr": 0.1, "reg": "l1_gamma"}'))
    with pytest.raises(AtlasError, match="the toy method cannot regularise with l1_gamma; set reg to none"):
        _register(monkeypatch, extra_methods, bad)
    (bad / "toy.py").write_text(TOY.replace("order=60", "order=50"))
    sys.modules.pop("atlas.methods.toy", None)
    with pytest.raises(AtlasError, match="the methods maco and toy have the same order 50"):
        methods.discover()
    (bad / "toy.py").write_text("X = 1\n")
    sys.modules.pop("atlas.methods.toy", None)
    with pytest.raises(AtlasError, match=r"atlas.methods.toy declares no METHOD = Method\(...\)"):
        methods.discover()
    monkeypatch.setenv(methods.PATH_VARIABLE, str(tmp_path / "nowhere"))
    with pytest.raises(AtlasError, match="ATLAS_METHOD_PATH names .*nowhere, which is not a folder"):
        methods.discover()


def test_a_toy_method_is_one_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], extra_methods: list[Path]
) -> None:
    _register(monkeypatch, extra_methods, _folder_with(tmp_path, "toy", TOY))
    assert names() == ("scratch", "pretrained", "pixel", "fourier", "maco", "toy")
    # Its settings and presets, the site's description, the config schema's entry.
    assert settings_for("toy").steps == 2 and settings_for("toy", "paper").steps == 3
    assert settings_for("toy", overrides={"lr": "0.5"}).lr == 0.5
    assert method_descriptions()["toy"] == "one flat colour per target, its RGB optimised"
    schema = schema_methods(yaml.safe_load(SCHEMA.read_text()))
    assert list(schema["properties"]["methods"]["properties"]) == list(names())
    assert schema["properties"]["methods"]["properties"]["toy"]["$ref"] == "#/$defs/method"
    # `atlas generate`: its own build ran (each image one flat colour), its records name it.
    out = tmp_path / "out"
    common = ["generate", "--classifier", "torchvision:resnet18", "--weights", "random", "--image-size", "32"]
    assert main([*common, "--method", "toy", "--targets", "class:1,2", "--out", str(out)]) == 0, capsys.readouterr()
    records = pd.read_parquet(out / "records.parquet")
    assert list(records["method"]) == ["toy", "toy"] and list(records["steps"]) == [2, 2]
    for image in records["image"]:
        with Image.open(out / image) as im:
            pixels = np.asarray(im)
        assert (pixels == pixels[0, 0]).all()
    assert json.loads((out / "run.json").read_text())["settings"]["method"] == "toy"
    # It takes no decoder: refused with the one method that does named.
    code = main(
        [*common, "--method", "toy", "--targets", "class:1", "--decoder", "random", "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert "--decoder is for the pretrained method, not toy; drop it" in capsys.readouterr().err


def test_a_toy_method_flows_through_the_workflow(tmp_path: Path) -> None:
    """Found through ATLAS_METHOD_PATH by the workflow (its config entry from the schema's shared
    definition), the records' schema text and the index: one module, nothing else edited."""
    env = _env() | {methods.PATH_VARIABLE: str(_folder_with(tmp_path, "toy", TOY))}
    code = "from atlas.schema import INDEX_COLUMNS as C; print(next(c.description for c in C if c.name == 'method'))"
    text = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert text.strip() == "scratch, pretrained, pixel, fourier, maco or toy"

    def toy_only(cfg: dict[str, Any]) -> None:
        for method in cfg["methods"]:
            cfg["methods"][method]["enabled"] = False
        cfg.update(classes=[0, 1], pairs=[], filters=[], exemplars={"top_k": 0})

    workdir = tmp_path / "run"
    write_config(workdir, toy_only)
    jobs = planned_jobs(ok(snakemake(workdir, "-n", env=env)))
    assert {j for j in jobs if j.startswith("generate_")} == {"generate_toy_class_0000"}
    assert "train_dae" not in jobs and "extract" not in jobs  # the toy takes no input from the dataset
    ok(snakemake(workdir, env=env))
    index = pd.read_parquet(workdir / "results" / RUN / "index.parquet")
    assert list(index["method"]) == ["toy", "toy"] and set(index["target_id"]) == {"class-0000", "class-0001"}
    assert "one flat colour per target" in (workdir / "results" / RUN / "site" / "summary.html").read_text()
    # Without the module the workflow does not know the method: a config naming it is refused.
    (workdir / "config.yaml").write_text(
        yaml.safe_dump(yaml.safe_load((workdir / "config.yaml").read_text()) | {"methods": {"toy": {"enabled": True}}})
    )
    proc = snakemake(workdir, "-n")
    assert proc.returncode != 0 and "methods: Additional properties are not allowed ('toy' was unexpected)" in (
        proc.stdout + proc.stderr
    )


# A method's name where code chooses by it: compared, tested for membership, a dict key, a case.
def _dispatch(name: str) -> re.Pattern[str]:
    q = rf"""["']{name}["']"""
    return re.compile(
        rf"""(==|!=)\s*{q}|{q}\s*(==|!=|not\s+in\b|in\b|:)|\bin\s*[(\[{{][^)\]}}\n]*{q}|[{{]\s*{q}|case\s+{q}"""
    )


def test_the_dispatch_pattern_finds_what_the_registry_replaced() -> None:
    """The pattern of the next test finds the dispatch that was written before the registry."""
    for line in (
        'if s.method == "scratch":',
        'if cfg.settings.method != "pretrained":',
        'if {"pretrained", "maco"} & set(enabled_methods()) or exemplars_on():',
        'decoder="random" if method in ("pretrained",) else None',
        '    "pixel": ("pixel_l2", "none"),',
    ):
        assert any(_dispatch(n).search(line) for n in names()), line
    assert not any(_dispatch(n).search('Column("method", _str, "target", listed(names()))') for n in names())


def test_no_dispatch_on_a_method_name_outside_its_module() -> None:
    """`grep` of each method's name in the software (the package outside atlas/methods/, the
    workflow, the Snakefile) finds no code that chooses by it."""
    files = [
        p
        for p in [*(REPO / "src" / "atlas").rglob("*.py"), *(REPO / "workflow").rglob("*.smk"), REPO / "Snakefile"]
        if (REPO / "src" / "atlas" / "methods") not in p.parents
    ]
    assert len(files) > 40
    found = [
        f"{p.relative_to(REPO)}:{i}: {line.strip()}"
        for p in files
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if not line.lstrip().startswith("#") and any(_dispatch(n).search(line) for n in names())
    ]
    assert not found, "dispatch on a method's name outside atlas/methods/:\n" + "\n".join(found)
