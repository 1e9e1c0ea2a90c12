"""The workflow's static checks: `snakemake --lint` is clean, and the conda environment that
documents every rule's software lists exactly the package's dependencies."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_snakemake_lint_reports_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(REPO / "Snakefile")],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert "Congratulations, your workflow is in a good condition!" in text, text[-4000:]
    assert "Lints for" not in text, text[-4000:]


def test_conda_env_lists_the_package_dependencies() -> None:
    env = yaml.safe_load((REPO / "workflow" / "envs" / "atlas.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert sorted(pip) == sorted(project["dependencies"])
    assert (REPO / "workflow" / "envs" / "atlas.post-deploy.sh").is_file()

