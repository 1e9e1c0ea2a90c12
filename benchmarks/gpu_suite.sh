#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md ("On a GPU") in one command of at most 10 minutes.
#
#   bash benchmarks/gpu_prepare.sh            # once, where the project's environment is: the
#                                             # embedded classifier's packages into .device-site/
#                                             # (for a GPU machine without network)
#   OUT=DIR bash benchmarks/gpu_suite.sh      # on the GPU machine, in a copy of the repository
#                                             # that includes .device-site/
#   bash benchmarks/gpu_suite.sh --smoke      # the same steps at toy sizes on a CPU (a test runs it)
#
# It runs python3 (or $PYTHON), which needs torch, torchvision, pandas, pyarrow, pillow, jinja2
# and tqdm; atlas need not be installed (src/ is put on PYTHONPATH). Most important figure first,
# each step under its own time limit and all of them under one budget (SUITE_BUDGET_S, default
# 450 s), so a slow or failing step costs its own figures only. What it writes goes to $OUT (a
# temporary folder when OUT is unset), at most eight files:
#   suite.log         everything the steps printed, with a header per step
#   summary.tsv       step, exit status, wall seconds ("skipped": no budget left)
#   *.json            the figures of throughput.py and job_overhead.py (--json)
# and the verdict on the two GPU targets (benchmarks/gpu_verdict.py) is in suite.log.
set -uo pipefail
cd "$(dirname "$0")/.."

smoke=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    *) echo "gpu_suite.sh: unknown argument '$arg'; the only one is --smoke" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d -t atlas-gpu-suite.XXXXXX)}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
[ -d .device-site ] && export PYTHONPATH="$PWD/.device-site:$PYTHONPATH"
export PYTHONUNBUFFERED=1
# --smoke checks that every step runs, not how fast: on a loaded CPU (the test suite runs SLURM
# jobs beside it) a toy step took 61 s of its 60, so its limits are doubled and its budget is
# 800 s, under the 900 s that its test gives the whole suite.
slack=1
[ "$smoke" = 1 ] && slack=2
budget=${SUITE_BUDGET_S:-$((smoke ? 800 : 450))}
start=$SECONDS
log="$OUT/suite.log"
summary="$OUT/summary.tsv"
printf 'step\trc\twall_s\n' >"$summary"
: >"$log"

if [ "$smoke" = 1 ]; then
  # Toy sizes on a CPU (VGG-16 at 32 px, narrow G): every step and flag of the real run.
  dev=cpu
  vgg=(--classifier torchvision:vgg16 --weights random --image-size 32 --width 0.0625)
  tp_chunks=1,2; tp_steps=1; scratch_chunks=1,2; big=2; ovh_steps=3; prec_steps=2; batch_width=0.0625
else
  dev=cuda
  vgg=(--classifier torchvision:vgg16 --weights random --width 1.0)
  tp_chunks=1,16,64,128; tp_steps=10; scratch_chunks=1,16,64; big=64; ovh_steps=21; prec_steps=100; batch_width=1.0
fi

# step NAME LIMIT_S COMMAND...: run COMMAND under min(LIMIT_S x slack, what is left of the budget).
step() {
  local name=$1 limit=$(($2 * slack))
  shift 2
  local left=$((budget - (SECONDS - start)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 15 ]; then
    printf '%s\tskipped\t0\n' "$name" >>"$summary"
    printf '\n=== %s: skipped, %s s of the budget left\n' "$name" "$left" | tee -a "$log"
    return
  fi
  printf '\n=== %s (limit %s s): %s\n' "$name" "$limit" "$*" | tee -a "$log"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >>"$summary"
  [ "$rc" = 0 ] || printf '=== %s: exit %s\n' "$name" "$rc" | tee -a "$log"
}

step environment 30 "$PY" -c "import sys, torch, torchvision
print('python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__)
print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')"
[ "$dev" = cuda ] && step nvidia-smi 15 nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv

# 1. The targets: the pretrained method's fraction of the bf16 peak, per chunk, with D alone.
step throughput-pretrained 150 "$PY" benchmarks/throughput.py "${vgg[@]}" --device "$dev" --methods pretrained \
  --chunks "$tp_chunks" --steps "$tp_steps" --json "$OUT/throughput-pretrained.json"
step throughput-scratch 120 "$PY" benchmarks/throughput.py "${vgg[@]}" --device "$dev" --methods scratch \
  --chunks "$scratch_chunks" --steps "$tp_steps" --no-d-alone --json "$OUT/throughput-scratch.json"
# 2. A job's start-up (imports, model load, scoring, writing) against its work, as the workflow runs it.
step job-overhead 100 "$PY" benchmarks/job_overhead.py "${vgg[@]}" --device "$dev" --method pretrained \
  --chunk "$big" --steps "$ovh_steps" --job-steps 500,1200 --json "$OUT/overhead.json"
step verdict 20 "$PY" benchmarks/gpu_verdict.py --throughput "$OUT/throughput-pretrained.json" \
  --throughput "$OUT/throughput-scratch.json" --overhead "$OUT/overhead.json"
# 3. What bf16 and channels-last buy: the same chunk in fp32 and the default layout.
step throughput-fp32 90 "$PY" benchmarks/throughput.py "${vgg[@]}" --device "$dev" --methods pretrained,scratch \
  --chunks "$big" --steps "$tp_steps" --precision fp32 --channels-last off --no-d-alone --json "$OUT/throughput-fp32.json"
# 4. Whether cuDNN's own algorithm search pays (each job's shapes are fixed).
step throughput-cudnn-benchmark 60 "$PY" benchmarks/throughput.py "${vgg[@]}" --device "$dev" --methods pretrained,scratch \
  --chunks "$big" --steps "$tp_steps" --cudnn-benchmark --no-d-alone --json "$OUT/throughput-cudnn.json"
# 5. Whether bf16 D keeps the scratch method's targets (the embedded classifier, real weights).
step precision 60 "$PY" benchmarks/precision.py --method scratch --steps "$prec_steps" --device "$dev"
# 6. The batched scratch method's convolutions against the alternatives.
step scratch-batching 50 "$PY" benchmarks/scratch_batching.py --device "$dev" --width "$batch_width" \
  --chunk "$big" --steps 3 --variants grouped,vmap,loop
# 7. Whether torch.compile pays (last: compiling can take minutes; a CPU test skips it).
[ "$smoke" = 1 ] || step throughput-compile 150 "$PY" benchmarks/throughput.py "${vgg[@]}" --device "$dev" \
  --methods pretrained --chunks "$big" --steps "$tp_steps" --compile --no-d-alone --json "$OUT/throughput-compile.json"

printf '\n=== done in %s s; results in %s\n' "$((SECONDS - start))" "$OUT" | tee -a "$log"
tee -a "$log" <"$summary"
# Non-zero when a step failed or was skipped, so a caller sees it; the figures stay in $OUT.
! grep -qvE $'^step\t|\t0\t' "$summary"
