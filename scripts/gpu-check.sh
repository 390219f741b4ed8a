#!/usr/bin/env bash
# gpu-check.sh: dogo's checks on a machine with one CUDA GPU, in under 8 minutes.
#
#   1. the CUDA-marked tests (pytest -m cuda)
#   2. a 1-GPU torchrun run with NCCL that trains, checkpoints, is resumed and finishes
#   3. dogo bench: ResNet-18 + ResNet-18 and ResNet-18 + ResNet-50, batch 256 and 512
#      (Fashion-MNIST when found, else --synthetic of its shape)
#
# Everything lands in one JSON file (default gpu-check.json): each part's status, seconds and
# results, the GPU's name and the torch version.
#
# usage: scripts/gpu-check.sh [--dry-run] [--out FILE]
#   --dry-run   no GPU needed: checks the tools, prints every command instead of running the
#               GPU parts and writes the JSON with every part "dry-run"
# environment: PYTHON (default: python), DOGO_GPU_CHECK_DIR (work folder, default a temp dir)
set -euo pipefail

DRY_RUN=0
OUT=gpu-check.json
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu-check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=${DOGO_GPU_CHECK_DIR:-$(mktemp -d -t dogo-gpu-check.XXXXXX)}
mkdir -p "$WORK"
PARTS="$WORK/parts.jsonl"
: > "$PARTS"
START=$(date +%s)
BUDGET_S=470   # 8 minutes less margin for writing the JSON

# The dogo under test is this checkout's.
export PYTHONPATH="$HERE/src${PYTHONPATH:+:$PYTHONPATH}"

say() { echo "gpu-check: $*" >&2; }
left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# part NAME STATUS SECONDS [JSON-FILE]: one line of parts.jsonl
part() {
  "$PYTHON" - "$1" "$2" "$3" "${4:-}" >> "$PARTS" <<'EOF'
import json, sys, pathlib
name, status, seconds, result = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
row = {"part": name, "status": status, "seconds": round(seconds, 1)}
if result and pathlib.Path(result).is_file():
    text = pathlib.Path(result).read_text()
    try:
        row["result"] = json.loads(text)
    except ValueError:
        row["output_tail"] = text[-4000:]
print(json.dumps(row))
EOF
}

# run NAME TIMEOUT_S COMMAND...: run (or print, in a dry run) with a time limit and record it
run() {
  local name=$1 limit=$2; shift 2
  local log="$WORK/$name.log" t0 status
  if [ "$DRY_RUN" = 1 ]; then
    say "[dry-run] $name (limit ${limit}s): $*"
    part "$name" dry-run 0
    return 0
  fi
  if [ "$(left)" -lt 20 ]; then
    say "$name: skipped, out of time"
    part "$name" skipped-out-of-time 0
    return 0
  fi
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  say "$name (limit ${limit}s): $*"
  t0=$(date +%s)
  if timeout "$limit" "$@" > "$log" 2>&1; then status=ok; else status="failed ($?)"; fi
  part "$name" "$status" $(( $(date +%s) - t0 )) "${RESULT:-$log}"
  [ "$status" = ok ] || { say "$name: $status; last lines:"; tail -5 "$log" >&2; }
  RESULT=
}

# ----------------------------------------------------------------------------- the machine

"$PYTHON" -c "import dogo, torch" || { say "cannot import dogo and torch with $PYTHON"; exit 2; }
GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
if [ "$DRY_RUN" = 0 ] && [ "$GPUS" -lt 1 ]; then
  say "no CUDA GPU here (torch.cuda.device_count() = 0); run with --dry-run to check the script"
  exit 2
fi
command -v torchrun > /dev/null || [ "$DRY_RUN" = 1 ] || { say "torchrun not on PATH"; exit 2; }

if "$PYTHON" -c "from dogo.data import load_dataset; load_dataset('fashion-mnist', limit=1)" 2>/dev/null; then
  SYNTH=""; DATA="fashion-mnist"
else
  SYNTH="--synthetic"; DATA="synthetic (fashion-mnist's shape)"
fi
CONFIG=$("$PYTHON" -c "from dogo.cli.quickstart import packaged_config; print(packaged_config('fmnist-dogo'))")
say "GPUs: $GPUS, data: $DATA, config: $CONFIG, work folder: $WORK"

# ----------------------------------------------------------------------------- 0. configs (no GPU needed)

# Every config + overrides the GPU parts use, validated by dogo's own loader (also in a dry run).
DDP_ARGS=(train.epochs=1 train.batch_size=256 train.device=cuda train.dist_backend=nccl
          logging.save_every_steps=10 logging.log_every=10 logging.knn_every=0 logging.tensorboard=false)
[ -n "$SYNTH" ] && DDP_ARGS+=(dataset.name=digits dataset.image_size=32)
bench_args() {  # BACKBONE0 BACKBONE1 BATCH
  echo "train.device=cuda train.batch_size=$3 train.models.0.backbone=$1 train.models.1.backbone=$2 train.models.0.width=1.0"
}
t0=$(date +%s)
if "$PYTHON" - "${DDP_ARGS[*]}" "$(bench_args resnet18 resnet18 256)" "$(bench_args resnet18 resnet50 512)" \
     > "$WORK/configs.log" 2>&1 <<'EOF'
import sys
from dogo.config import load_config
from dogo.cli.quickstart import packaged_config
for overrides in sys.argv[1:]:
    load_config(packaged_config("fmnist-dogo"), overrides.split())  # the same file as $CONFIG
print("configs ok")
EOF
then part configs ok $(( $(date +%s) - t0 )); else part configs failed $(( $(date +%s) - t0 )) "$WORK/configs.log"; cat "$WORK/configs.log" >&2; fi

# ----------------------------------------------------------------------------- 1. CUDA tests

run cuda-tests 120 "$PYTHON" -m pytest -q -m cuda "$HERE/tests"

# ----------------------------------------------------------------------------- 2. torchrun + NCCL

RUN="$WORK/ddp-run"
rm -rf "$RUN"
DDP_ARGS=(fmnist-dogo train.epochs=1 train.batch_size=256 train.device=cuda
          train.dist_backend=nccl logging.save_every_steps=10 logging.log_every=10 logging.knn_every=0
          logging.tensorboard=false)
[ -n "$SYNTH" ] && DDP_ARGS+=(dataset.name=digits dataset.image_size=32)
run ddp-train 120 torchrun --standalone --nproc_per_node 1 -m dogo pretrain "$CONFIG" "${DDP_ARGS[@]}" train.max_steps=20 --out "$RUN" -q
run ddp-resume 120 torchrun --standalone --nproc_per_node 1 -m dogo pretrain --resume "$RUN" train.max_steps=40 -q
if [ "$DRY_RUN" = 0 ]; then
  RESULT="$WORK/ddp-check.json" run ddp-check 30 "$PYTHON" - "$RUN" <<'EOF'
import json, sys, pathlib
run = pathlib.Path(sys.argv[1])
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
steps = [r["step"] for r in rows if "peer/0/loss" in r]
resumes = (run / "resume-log.jsonl").read_text().splitlines()
ok = steps and steps[-1] == 40 and len(resumes) == 1 and (run / "checkpoints" / "last.pt").is_file()
out = {"last_step": steps[-1] if steps else None, "resumes": len(resumes), "ok": bool(ok)}
pathlib.Path(sys.argv[1] + "/../ddp-check.json").resolve().write_text(json.dumps(out))
print(json.dumps(out))
sys.exit(0 if ok else 1)
EOF
fi

# ----------------------------------------------------------------------------- 3. bench

for pair in "resnet18 resnet18" "resnet18 resnet50"; do
  set -- $pair
  for batch in 256 512; do
    name="bench-$1-$2-b$batch"
    RESULT="$WORK/$name.json" run "$name" 90 sh -c "\"$PYTHON\" -m dogo bench \"$CONFIG\" $SYNTH --json --steps 5 \
      --warmup 2 --split-steps 1 --no-ceiling --no-reference $(bench_args "$1" "$2" "$batch") > \"$WORK/$name.json\""
  done
done

# ----------------------------------------------------------------------------- one JSON

"$PYTHON" - "$PARTS" "$OUT" "$DRY_RUN" "$DATA" "$(( $(date +%s) - START ))" <<'EOF'
import json, sys, torch
parts_file, out, dry, data, seconds = sys.argv[1:6]
parts = [json.loads(l) for l in open(parts_file) if l.strip()]
doc = {"dry_run": dry == "1", "seconds": int(seconds), "data": data, "torch": torch.__version__,
       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
       "ok": all(p["status"] in ("ok", "dry-run") for p in parts), "parts": parts}
with open(out, "w") as handle:
    json.dump(doc, handle, indent=1)
print(f"gpu-check: {'all ok' if doc['ok'] else 'FAILED'} in {seconds} s -> {out}", file=sys.stderr)
sys.exit(0 if doc["ok"] else 1)
EOF
