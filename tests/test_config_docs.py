"""docs/configuration.md is what `python -m atlas.config_docs` generates from the config schema,
and it names every key of the schema."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from atlas import config_docs

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DOCS = REPO / "docs" / "configuration.md"


def _names(node: Any) -> Iterator[str]:
    """Every property name anywhere in the schema ($defs included)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "properties" and isinstance(value, Mapping):
                yield from value
            yield from _names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _names(item)


def test_the_configuration_page_is_the_generated_one() -> None:
    assert DOCS.read_text(encoding="utf-8") == config_docs.generate(REPO), (
        "docs/configuration.md is out of date; regenerate it with `uv run python -m atlas.config_docs`"
    )


def test_every_schema_key_has_a_row() -> None:
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    page = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([^`]+)` \|", page, re.M))
    sections = set(re.findall(r"^## `([^`]+)`$", page, re.M))
    assert sections == set(schema["properties"])
    last = {path.rsplit(".", 1)[-1].removesuffix("[]") for path in documented | sections}
    missing = sorted(set(_names(schema)) - last)
    assert not missing, f"schema keys without a row in docs/configuration.md: {missing}"
    # Nested keys by their dotted path, a shared definition once under its placeholder.
    for path in (
        "run",
        "classifier.name",
        "robustness.scales",
        "filters[].layer",
        "methods.scratch",
        "methods.<method>.classes_per_job",
        "methods.<method>.settings.lr",
        "dataset.root",
    ):
        assert path in documented, path
    # Each row: type, default and allowed values filled in.
    row = next(line for line in page.splitlines() if line.startswith("| `compute.precision` |"))
    assert "| string | `auto` | one of `auto`, `fp32`, `bf16` |" in row


def test_check_fails_on_a_stale_page_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "workflow" / "schemas").mkdir(parents=True)
    shutil.copy(SCHEMA, tmp_path / "workflow" / "schemas" / SCHEMA.name)
    assert config_docs.main(["--root", str(tmp_path), "--check"]) == 1
    assert "docs/configuration.md is missing" in capsys.readouterr().err
    assert config_docs.main(["--root", str(tmp_path)]) == 0
    assert config_docs.main(["--root", str(tmp_path), "--check"]) == 0
    page = tmp_path / "docs" / "configuration.md"
    page.write_text(page.read_text() + "edited by hand\n")
    assert config_docs.main(["--root", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "out of date" in err and "python -m atlas.config_docs" in err
