#!/usr/bin/env bash
# Run by snakemake once, inside the new conda environment, after it is created from atlas.yaml:
# installs the atlas package (the `atlas` command of every rule) from the repository. Snakemake
# runs it from its working directory, the repository root with the README's commands.
set -euo pipefail
if [[ ! -f pyproject.toml ]] || ! grep -q '^name = "atlas"' pyproject.toml; then
  echo "atlas.post-deploy.sh: run snakemake from the Atlas repository root to build its conda environment" >&2
  exit 1
fi
python -m pip install --no-deps --no-build-isolation . || python -m pip install --no-deps .
