#!/usr/bin/env bash
# The one prepared GPU run (docs/gpu.md): everything a lent H200 should do, in one command, in <= 8 minutes.
#
#   bash benchmarks/gpu_run.sh [--dry-run] OUT_DIR
#
# Steps (each timed, its exit status kept; a failing step does not stop the others):
#   env        GPU, driver, torch / CUDA / CuPy versions                       -> OUT_DIR/env.json
#   wheels     installs .whl/*.whl (e.g. torchattacks) into a private site dir, if present
#   data       untars .data/cifar10-jpeg.tar.gz (the CIFAR-10 JPEG copy) into WORK_DIR
#   tests      the gpu-marked tests (torch CUDA and CuPy)
#   fastpath   the CPU-runnable fast-path agreement tests, on the GPU (bf16/channels_last/compile vs fp32)
#   bench      benchmarks/bench_empirical.py --device cuda (ours vs torchattacks vs fp32 eager; MFU)
#   simulate   benchmarks/bench_simulate.py --backend cupy (samples/s, fraction of HBM bandwidth)
#   apgd       benchmarks/bench_autoattack.py --device cuda (our APGD-CE vs torchattacks' APGD, images/s)
#   plan       robust-features reproduce --preset cifar10 --plan
#   reproduce  robust-features reproduce --preset cifar10 --device cuda, with what time is left
# and OUT_DIR/records.tar.gz with every record (no models or datasets), OUT_DIR/steps.json and the one log
# OUT_DIR/gpu_run.log. --dry-run runs the same steps on the CPU at smoke sizes (cifar10-smoke, tiny
# benchmarks, the NumPy backend; a 100-image stand-in tarball when the CIFAR-10 copy is absent); CI runs it.
#
# Environment: PYTHON (default python3), WORK_DIR (default a fresh temporary folder), DEADLINE_S (the
# whole script's budget, default 480 on a GPU, 900 for --dry-run).
set -uo pipefail

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
if [ $# -ne 1 ]; then
  echo "usage: bash benchmarks/gpu_run.sh [--dry-run] OUT_DIR" >&2
  exit 2
fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR=$(mkdir -p "$1" && cd "$1" && pwd) || { echo "gpu_run.sh: cannot create OUT_DIR=$1" >&2; exit 2; }
PY=${PYTHON:-python3}
WORK=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_run.XXXXXX")}
mkdir -p "$WORK"
LOG="$OUT_DIR/gpu_run.log"
STEPS="$OUT_DIR/steps.jsonl"
: >"$LOG"
: >"$STEPS"
cd "$REPO" || exit 2
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
START=$(date +%s)
if [ $DRY = 1 ]; then DEADLINE=${DEADLINE_S:-900}; DEV=cpu; else DEADLINE=${DEADLINE_S:-480}; DEV=cuda; fi

log() { echo "[gpu_run $(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# step NAME TIMEOUT_S CMD...: run CMD with a time limit, append its output to the log, record rc and seconds
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( DEADLINE - ($(date +%s) - START) ))
  if [ "$limit" -gt "$left" ]; then limit=$left; fi
  if [ "$limit" -lt 5 ]; then
    log "$name: skipped, ${left}s left of the ${DEADLINE}s budget"
    echo "{\"step\": \"$name\", \"rc\": null, \"seconds\": 0, \"skipped\": true}" >>"$STEPS"
    return 0
  fi
  log "$name (limit ${limit}s): $*"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  log "$name: exit $rc after ${dt}s"
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $dt, \"limit\": $limit}" >>"$STEPS"
  return 0
}

log "repo $REPO, out $OUT_DIR, work $WORK, device $DEV, budget ${DEADLINE}s$([ $DRY = 1 ] && echo ', DRY RUN (CPU, smoke sizes)')"

# --- env ---------------------------------------------------------------------------------------
step env 60 "$PY" - "$OUT_DIR/env.json" <<'EOF'
import json, platform, subprocess, sys
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_memory_gib=p.total_memory / 2**30, multiprocessors=p.multi_processor_count)
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as exc:  # noqa: BLE001
        info["driver"] = f"unavailable ({exc})"
try:
    import cupy
    info["cupy"] = cupy.__version__
except Exception as exc:  # noqa: BLE001
    info["cupy"] = f"unavailable ({exc.__class__.__name__})"
print(json.dumps(info, indent=1))
json.dump(info, open(sys.argv[1], "w"), indent=1)
EOF

# --- wheels (packages the GPU image lacks, e.g. torchattacks) --------------------------------------
if ls "$REPO"/.whl/*.whl >/dev/null 2>&1; then
  step wheels 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" "$REPO"/.whl/*.whl
  export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi

# --- data --------------------------------------------------------------------------------------
TARBALL="$REPO/.data/cifar10-jpeg.tar.gz"
if [ ! -f "$TARBALL" ] && [ $DRY = 1 ]; then   # CI has no data: a small stand-in with the same layout
  TARBALL="$WORK/standin-cifar10-jpeg.tar.gz"
  step standin 60 "$PY" - "$TARBALL" <<'EOF'
import io, sys, tarfile
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
with tarfile.open(sys.argv[1], "w:gz") as tar:
    for split, n in (("train", 8), ("test", 4)):
        for c in classes:
            for i in range(n):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG", quality=75)
                info = tarfile.TarInfo(f"cifar10-jpeg/{split}/{c}/{i:04d}.jpg")
                info.size = len(buf.getvalue())
                tar.addfile(info, io.BytesIO(buf.getvalue()))
EOF
fi
if [ -f "$TARBALL" ]; then
  step data 120 tar xzf "$TARBALL" -C "$WORK"
else
  log "data: $TARBALL not found; copy ../shared/data/cifar10-jpeg.tar.gz there (docs/gpu.md)"
  echo '{"step": "data", "rc": 1, "seconds": 0}' >>"$STEPS"
fi
DATA="imagefolder:$WORK/cifar10-jpeg"

# --- tests -------------------------------------------------------------------------------------
export HYPOTHESIS_PROFILE=ci
step tests 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
step fastpath 120 "$PY" -m pytest -q -p no:cacheprovider tests/empirical/test_fast_path.py

# --- benchmarks --------------------------------------------------------------------------------
if [ $DRY = 1 ]; then
  step bench 120 "$PY" benchmarks/bench_empirical.py --device cpu --archs mlp --batch-size 16 --iters 1 \
    --repeats 1 --out "$OUT_DIR/bench_empirical.json"
  step simulate 60 "$PY" benchmarks/bench_simulate.py --backend numpy --d 64 --batch 128 --steps 2 \
    --out "$OUT_DIR/bench_simulate.json"
  step apgd 60 "$PY" benchmarks/bench_autoattack.py --device cpu --arch mlp --image-size 8 --channels 1 \
    --batch-size 16 --steps 2 --repeats 1 --out "$OUT_DIR/bench_autoattack.json"
else
  step bench 150 "$PY" benchmarks/bench_empirical.py --device cuda --archs fastnet,resnet18 --batch-size 512 \
    --iters 20 --compile --out "$OUT_DIR/bench_empirical.json"
  step simulate 60 "$PY" benchmarks/bench_simulate.py --backend cupy --d 3072 --batch 16384 --steps 5 \
    --out "$OUT_DIR/bench_simulate.json"
  step apgd 60 "$PY" benchmarks/bench_autoattack.py --device cuda --batch-size 512 --steps 100 --repeats 2 \
    --out "$OUT_DIR/bench_autoattack.json"
fi

# --- the reproduction --------------------------------------------------------------------------
PRESET=$([ $DRY = 1 ] && echo cifar10-smoke || echo cifar10)
step plan 60 "$PY" -m robust_features reproduce --preset "$PRESET" --data "$DATA" --out-dir "$WORK/runs" --plan
step reproduce 600 "$PY" -m robust_features reproduce --preset "$PRESET" --data "$DATA" --device "$DEV" \
  --out-dir "$WORK/runs" --quiet

# --- what comes back ---------------------------------------------------------------------------
"$PY" - "$STEPS" "$OUT_DIR/steps.json" "$START" <<'EOF'
import json, sys, time
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
json.dump({"steps": rows, "total_seconds": time.time() - float(sys.argv[3]),
           "failed": [r["step"] for r in rows if r.get("rc") not in (0, None)]}, open(sys.argv[2], "w"), indent=1)
EOF
rm -f "$STEPS"
if [ -d "$WORK/runs/$PRESET" ]; then
  (cd "$WORK/runs" && find "$PRESET" -maxdepth 2 \( -name '*.json' -o -name '*.md' -o -name '*.png' -o -name '*.tex' \) \
     -not -path '*/models/*' -not -path '*/datasets/*' -not -path '*/evals/*' -print0 \
     | tar czf "$OUT_DIR/records.tar.gz" --null -T -)
fi
FAILED=$("$PY" -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))['failed']))" "$OUT_DIR/steps.json")
log "done in $(( $(date +%s) - START ))s; failed steps: ${FAILED:-none}; records in $OUT_DIR"
[ -z "$FAILED" ]
