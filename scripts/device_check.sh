#!/usr/bin/env bash
# The one command for a lent GPU machine (one H200, Python 3.12, torch and CuPy, no package registry):
# environment, install, GPU tests, benchmark at paper settings, the LA 20 % protocol (honest default,
# paper settings) trained for the time the call has left with checkpoints, evaluation on the 8
# validation cases, and the trained model returned in checksummed chunks. Everything lands under
# $OUT (at most 8 files come back). bundles/la/docs/README.md ("Training on a GPU") explains the plan.
#
#   bash scripts/device_check.sh --prepare      # here, before the lease: wheels into .whl/, LA pack into device_data/
#   bash scripts/device_check.sh --receive      # there: keep the parts this call carried, nothing else
#   bash scripts/device_check.sh [--minutes 9]  # there: everything; a later call (machine still warm) resumes
#   bash scripts/device_check.sh --smoke        # any CPU: the same steps, tiny, on synthetic data (the tests run it)
#
# Transfer plan (each call carries at most 64 MiB; the pack is 3 parts of <= 48 MiB, part 1 = the
# 16 labeled + 8 validation cases + 14 unlabeled ones; the wheels are 5.3 MB):
#   call 1: carry .whl device_data/la-pack/la.manifest.json device_data/la-pack/la.part01 device_data/la-pack/la.part03
#           command: bash scripts/device_check.sh --receive
#   call 2 (within the 30 s the machine stays warm): carry .whl la.manifest.json la.part02; command: bash scripts/device_check.sh
#   call 3 (likewise, to finish 40,000 iterations): carry .whl; command: bash scripts/device_check.sh
# Parts and state live in $SASNET_DEVICE_STATE (default /tmp/sasnet-device), which survives only while
# the machine is warm. When it went cold, part 1 alone trains on its subset: bash scripts/device_check.sh --subset.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

MODE=run
MINUTES=9
SUBSET=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prepare) MODE=prepare ;;
        --receive) MODE=receive ;;
        --smoke) MODE=smoke ;;
        --subset) SUBSET=1 ;;
        --minutes) MINUTES="$2"; shift ;;
        *) echo "device_check.sh: error: unknown argument '$1'; expected --prepare, --receive, --smoke, --subset or --minutes N." >&2; exit 2 ;;
    esac
    shift
done
START=$(date +%s)
PYTHON=${PYTHON:-python3}

log() { echo "[device_check $(date -u +%H:%M:%S), $(( $(date +%s) - START )) s] $*"; }
fail() { echo "device_check.sh: error: $*" >&2; exit 1; }
left() { echo $(( START + MINUTES * 60 - $(date +%s) )); }

# ------------------------------------------------------------------ here: what a lease needs
if [ "$MODE" = prepare ]; then
    WHEELS=(monai==1.6.1 pytorch-ignite==0.5.5 nibabel==5.4.2 fire==0.7.1 termcolor==3.3.0)
    mkdir -p .whl
    for wheel in "${WHEELS[@]}"; do
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl "$wheel" \
            || "$PYTHON" -m pip wheel -q --no-deps -w .whl "$wheel" || fail "could not fetch a wheel of $wheel"
    done
    [ -f device_data/la-pack/la.manifest.json ] || "$PYTHON" scripts/device_transfer.py pack --dataset_dir data/la \
        --output_dir device_data/la-pack || fail "packing data/la failed (prepare it first: scripts/prepare_la.py)"
    du -sh .whl device_data/la-pack/* | sed 's/^/  /'
    echo "ready: see the transfer plan at the top of scripts/device_check.sh"
    exit 0
fi

# ------------------------------------------------------------------ settings of the run
if [ "$MODE" = smoke ]; then
    STATE=${SASNET_DEVICE_STATE:-$(mktemp -d /tmp/sasnet-smoke.XXXXXX)}
    OUT=${OUT:-$STATE/out}
    DEVICE=cpu
    BENCH=(--setting small --device cpu --num_labeled 3 --iterations 2 --warmup 1 --profile_iterations 1 --options sar_uint8)
    TRAIN=(--device cpu --num_labeled 3 --patch_size "[32,32,16]" --network_def#n_filters 2 --max_iterations 6
           --checkpoint_interval 4 --val_interval 6 --num_workers 0 --sw_batch_size 2 --log_interval 2)
    EVAL=(--eval_roi_size "[32,32,16]" --eval_stride "[16,16,8]")
    SPLIT_MIB=0.3
else
    STATE=${SASNET_DEVICE_STATE:-/tmp/sasnet-device}
    OUT=${OUT:-$REPO/device_output}
    DEVICE=cuda
    BENCH=(--setting paper --device cuda --iterations 20 --warmup 5 --profile_iterations 3 --research_workers 8
           --options channels_last sdm_cupy sar_uint8)
    # paper settings, honest default protocol; validation and full checkpoints sparse (a checkpoint holds 565 MB)
    TRAIN=(--device cuda --num_workers 8 --checkpoint_interval 10000 --val_interval 20000 --log_interval 500)
    EVAL=()
    SPLIT_MIB=15
fi
mkdir -p "$STATE" "$OUT" || fail "cannot create $STATE or $OUT"
exec > >(tee -a "$OUT/device_check.log") 2> >(tee -a "$OUT/device_check.log" >&2)
log "mode $MODE, state in $STATE, outputs in $OUT, budget $MINUTES min"

# ------------------------------------------------------------------ environment
log "environment"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
else
    echo "no nvidia-smi: no NVIDIA GPU here"
fi
"$PYTHON" - <<'EOF'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, GPU available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, bf16 {torch.cuda.is_bf16_supported()}")
try:
    import cupy
    print(f"CuPy {cupy.__version__}")
except ImportError:
    print("CuPy: not installed")
EOF

# ------------------------------------------------------------------ install (wheels carried in .whl/)
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    if [ ! -f "$STATE/site/.installed" ]; then
        log "installing $(ls .whl/*.whl | wc -l) wheels into $STATE/site"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$STATE/site" .whl/*.whl \
            || fail "installing the wheels of .whl/ failed"
        touch "$STATE/site/.installed"
    fi
    export PYTHONPATH="$STATE/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PYTHON" -c "import monai, ignite, nibabel, fire, sasnet_components; print('monai', monai.__version__, '| ignite', ignite.__version__, '| nibabel', nibabel.__version__)" \
    || fail "the project's packages do not import: carry the wheels (bash scripts/device_check.sh --prepare, then carry .whl)"

# ------------------------------------------------------------------ data: the parts carried by this and earlier calls
mkdir -p "$STATE/pack"
PACK_SOURCE=device_data/la-pack   # what this call carried
if [ "$MODE" = smoke ]; then
    PACK_SOURCE="$STATE/carried"
    if [ ! -f "$PACK_SOURCE/la.manifest.json" ]; then
        log "smoke: a synthetic LA dataset, packed in small parts"
        "$PYTHON" scripts/make_synthetic_la.py --output_dir "$STATE/raw" --num_train 8 --num_test 0 --shape "[40,40,24]" >/dev/null \
            && "$PYTHON" scripts/prepare_la.py --input_dir "$STATE/raw" --output_dir "$STATE/prepared" --num_labeled 3 \
                --num_validation 2 --progress false >/dev/null \
            && "$PYTHON" scripts/device_transfer.py pack --dataset_dir "$STATE/prepared" --output_dir "$PACK_SOURCE" \
                --part_size_mib 0.4 >/dev/null || fail "smoke: making the synthetic pack failed"
    fi
fi
if [ -d "$PACK_SOURCE" ]; then
    for part in "$PACK_SOURCE"/*; do
        [ -f "$part" ] && cp -f "$part" "$STATE/pack/" && log "received $(basename "$part") ($(du -h "$part" | cut -f1))"
    done
fi
[ -f "$STATE/pack/la.manifest.json" ] || fail "no pack manifest in $STATE/pack: carry device_data/la-pack/la.manifest.json and its parts"
if [ "$MODE" = receive ]; then
    log "parts kept in $STATE/pack: $(ls "$STATE/pack" | tr '\n' ' '); the next call (within 30 s) carries the others"
    exit 0
fi
MISSING=$("$PYTHON" - "$STATE/pack/la.manifest.json" <<'EOF'
import json, sys
from pathlib import Path
manifest = Path(sys.argv[1])
parts = json.loads(manifest.read_text())["parts"]
print(" ".join(p["file"] for p in parts if not (manifest.parent / p["file"]).is_file()))
EOF
)
if [ -n "$MISSING" ] && [ "$SUBSET" = 0 ]; then
    fail "parts missing: $MISSING. Carry them in a call while the machine is warm, or pass --subset to train on the cases present (part 1: all labeled and validation cases, fewer unlabeled ones)."
fi
log "unpacking"
"$PYTHON" scripts/device_transfer.py unpack "$STATE/pack" --output_dir "$STATE/data" || fail "unpacking failed"
[ -z "$MISSING" ] || log "SUBSET: parts $MISSING are missing; training on the cases present (see the unpack lines above)"

# ------------------------------------------------------------------ GPU tests and benchmark (once per warm machine)
if [ "$MODE" != smoke ] && [ ! -f "$STATE/tests.done" ]; then
    log "GPU tests (pytest -m cuda)"
    "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider tests/transforms/test_signed_distance.py tests/handlers/test_sar_fusion.py \
        && touch "$STATE/tests.done"
fi
if [ ! -f "$STATE/benchmark/benchmark.md" ]; then
    log "benchmark"
    "$PYTHON" scripts/benchmark_training.py "${BENCH[@]}" --dataset_dir "$STATE/data" --output_dir "$STATE/benchmark" \
        || log "the benchmark failed (see above); training goes on"
fi
[ -f "$STATE/benchmark/benchmark.json" ] && cp "$STATE/benchmark/benchmark.json" "$OUT/"

# ------------------------------------------------------------------ training: resume what an earlier call left
RESERVE=$([ "$MODE" = smoke ] && echo 0 || echo 100)   # seconds kept for evaluation and the model's return
CHECKPOINT="$STATE/runs/checkpoints/checkpoint_final.pt"
RESUME=()
[ -f "$CHECKPOINT" ] && RESUME=(--resume_from "$CHECKPOINT") && log "resuming from $CHECKPOINT"
run_training() {
    "$PYTHON" -m monai.bundle run training --config_file bundles/la/configs/train.yaml --dataset_dir "$STATE/data" \
        --output_dir "$STATE/runs" --ckpt_dir "$STATE/models" --progress false "${TRAIN[@]}" "$@"
}
if [ "$MODE" = smoke ]; then
    # two calls' worth: a run stopped by its budget, then the resumed rest
    run_training --iterations_this_run 3 || fail "training failed"
    run_training --resume_from "$CHECKPOINT" || fail "resumed training failed"
else
    BUDGET=$(( $(left) - RESERVE ))
    [ "$BUDGET" -gt 30 ] || fail "only $(left) s left of the $MINUTES min budget: no time to train"
    log "training for at most $BUDGET s"
    run_training --time_limit "$BUDGET" "${RESUME[@]}" || fail "training failed"
fi
"$PYTHON" - "$CHECKPOINT" <<'EOF'
import sys, torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
print(f"training checkpoint at iteration {state['trainer']['iteration']}")
EOF

# ------------------------------------------------------------------ evaluation on the validation cases, model back
log "evaluating $STATE/models/model.pt on the validation cases"
"$PYTHON" -m monai.bundle run evaluating --config_file "['bundles/la/configs/train.yaml','bundles/la/configs/evaluate.yaml']" \
    --dataset_dir "$STATE/data" --output_dir "$STATE/runs" --ckpt_dir "$STATE/models" --progress false "${TRAIN[@]}" "${EVAL[@]}" \
    || fail "evaluation failed"
"$PYTHON" - "$STATE/runs/eval_validation" "$OUT/metrics.json" <<'EOF'
import csv, json, sys
from pathlib import Path
folder = Path(sys.argv[1])
summary = json.loads((folder / "metrics_summary.json").read_text())
with open(folder / "metrics_per_case.csv") as f:
    summary["per_case"] = list(csv.DictReader(f))
Path(sys.argv[2]).write_text(json.dumps(summary, indent=2) + "\n")
print("validation means:", {k: round(v, 4) for k, v in summary["mean"].items()})
EOF
rm -f "$OUT"/model.pt.chunk* "$OUT/model.pt.chunks.json"
"$PYTHON" scripts/device_transfer.py split "$STATE/models/model.pt" --output_dir "$OUT" --chunk_mib "$SPLIT_MIB" \
    || fail "splitting the model failed"
log "done; join the model here with: python scripts/device_transfer.py join <files>/model.pt.chunks.json --output_path model.pt"
ls -l "$OUT"
