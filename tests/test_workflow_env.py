"""The conda environment that documents every rule's software (`snakemake --lint` asks for one;
tests/test_workflow.py runs the lint) lists exactly the package's dependencies."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_conda_env_lists_the_package_dependencies() -> None:
    env = yaml.safe_load((REPO / "workflow" / "envs" / "atlas.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert sorted(pip) == sorted(project["dependencies"])
    assert (REPO / "workflow" / "envs" / "atlas.post-deploy.sh").is_file()
