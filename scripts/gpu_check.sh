#!/usr/bin/env bash
# The GPU check: one command, from the repository root, on a machine with a GPU and Python.
#
#   scripts/gpu_check.sh                    # venv with the pinned CUDA wheels, then every stage
#   scripts/gpu_check.sh --python PY        # use an interpreter that already has torch (CUDA)
#   scripts/gpu_check.sh --dry-run          # every stage on the CPU at tiny sizes (CI; < 60 s)
#
# Stages, each under its own time budget (printed; a stage past it is stopped and the next
# one runs):
#   setup      the venv (torch/torchaudio from constraints.txt; PyPI's Linux wheels are CUDA
#              builds) and a record of the machine: GPU, driver, torch, CUDA, commit
#   tests      pytest -m cuda: every objective's step in fp32/bf16/fp16 against the CPU, the
#              fp16 scaler through a resume, extract, ABX and the phone probe against the CPU
#   ddp        two DDP ranks against one process: NCCL on two GPUs (two ranks sharing one GPU
#              are refused by NCCL, so gloo with CUDA tensors runs there) and, on two GPUs or
#              more, the training entry point under torchrun with NCCL
#   bench-*    scripts/benchmark.py: CPC_audio's configuration (dense and gathered scores) and
#              the default model, bf16 and fp32, eager at the largest batch that fits (doubling
#              from 64; reported), then torch.compile at that batch: ms/step, sequences/s and
#              the fraction of the measured matmul rate (MFU); last, bf16 with --profile
#              (time per phase) if time is left
#
# --budget SECONDS (default 570) bounds the stages after setup: a stage gets at most what is
# left, and stages are skipped once less than 20 s is left.
#
# Everything goes to one folder (--out, default runs/gpu_check/<UTC time>): stages.jsonl (one
# line per stage as it ends), results.jsonl (every benchmark row), summary.md, and a log per
# stage. Each stage appends when it ends, so a run cut short keeps what it measured.
set -u -o pipefail

usage() {
    sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

ARGS="$*"
DRY_RUN=0
OUT=""
PY=""
VENV="runs/gpu_check/venv"
TOTAL_BUDGET=570  # a 10-minute slot with a margin to copy the results back
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --out) OUT="$2"; shift ;;
        --python) PY="$2"; shift ;;
        --venv) VENV="$2"; shift ;;
        --budget) TOTAL_BUDGET="$2"; shift ;;
        -h|--help) usage 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO" || exit 2
OUT="${OUT:-runs/gpu_check/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
STAGES="$OUT/stages.jsonl"
RESULTS="$OUT/results.jsonl"
SUMMARY="$OUT/summary.md"
START=$(date +%s)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

{
    echo "# GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "Command: \`scripts/gpu_check.sh $ARGS\` (dry run: $DRY_RUN), commit" \
         "$(git rev-parse HEAD 2>/dev/null || echo unknown)$(git status --porcelain \
            --untracked-files=no 2>/dev/null | grep -q . && echo ' with local changes')."
    echo
    echo "Stages as they ended (result, seconds of the budget):"
    echo
} > "$SUMMARY"
: > "$STAGES"
: > "$RESULTS"

remaining() { echo $(( TOTAL_BUDGET - ($(date +%s) - START) )); }

# stage NAME BUDGET COMMAND...: run COMMAND under min(BUDGET, what is left), log it, record it.
stage() {
    local name="$1" budget="$2"
    shift 2
    local left
    left=$(remaining)
    if [ "$left" -lt 20 ]; then
        echo "== $name: skipped, ${left}s left of the ${TOTAL_BUDGET}s budget"
        printf '{"stage": "%s", "result": "skipped", "seconds": 0, "budget": %d}\n' \
            "$name" "$budget" >> "$STAGES"
        echo "- $name: skipped (out of time)" >> "$SUMMARY"
        return 0
    fi
    [ "$budget" -gt "$left" ] && budget=$left
    echo "== $name: budget ${budget}s ($(remaining)s left in all): $*"
    local begin rc result
    begin=$(date +%s)
    timeout --signal=TERM --kill-after=15 "$budget" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    local seconds=$(( $(date +%s) - begin ))
    case "$rc" in
        0) result="ok" ;;
        124|137) result="timed out" ;;
        *) result="failed (exit $rc)" ;;
    esac
    printf '{"stage": "%s", "result": "%s", "rc": %d, "seconds": %d, "budget": %d}\n' \
        "$name" "$result" "$rc" "$seconds" "$budget" >> "$STAGES"
    echo "- $name: $result, ${seconds}s of ${budget}s" >> "$SUMMARY"
    echo "   $name: $result in ${seconds}s (log: $OUT/$name.log)"
    tail -n 3 "$OUT/$name.log" | sed 's/^/   | /'
    return 0
}

# --------------------------------------------------------------------------- setup
setup_venv() {
    python3 -m venv "$VENV" &&
        "$VENV/bin/python" -m pip install --quiet --upgrade pip &&
        "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[dev]"
}

if [ -z "$PY" ]; then
    if [ "$DRY_RUN" = 1 ]; then
        PY="$(command -v python || command -v python3)"  # the current environment
    else
        export VENV
        export -f setup_venv
        stage setup 300 bash -c setup_venv
        PY="$VENV/bin/python"
    fi
fi
START=$(date +%s)  # the budget bounds the stages after setup
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "gpu_check.sh: $PY cannot import torch; see $OUT/setup.log" | tee -a "$SUMMARY" >&2
    exit 1
fi
"$PY" - > "$OUT/machine.json" <<'EOF'
import json, platform, subprocess, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "cuda_available": torch.cuda.is_available(), "gpus": []}
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    info["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}"})
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    info["nvidia_smi"] = smi.stdout.strip()
except (OSError, subprocess.SubprocessError):
    info["nvidia_smi"] = None
print(json.dumps(info))
EOF
echo "machine: $(cat "$OUT/machine.json")"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$DRY_RUN" = 0 ] && [ "$GPUS" -lt 1 ]; then
    echo "gpu_check.sh: no CUDA device visible to $PY (see $OUT/machine.json); use --dry-run" \
         "to exercise the stages on the CPU" | tee -a "$SUMMARY" >&2
    exit 1
fi

# --------------------------------------------------------------------------- stages
if [ "$DRY_RUN" = 1 ]; then
    export SSL_SPEECH_TEST_DEVICE=cpu
    DEVICE=cpu
    # The bodies once each: one objective's step (fp32 and bf16), the resume, extract, eval.
    TEST_SELECTION="not ddp and (not train_step or (cpc and not acpc and not head))"
    export OMP_NUM_THREADS=1
else
    export SSL_SPEECH_TEST_DEVICE=cuda
    DEVICE=cuda
    TEST_SELECTION="not ddp"
fi

stage tests 150 "$PY" -m pytest -p no:cacheprovider -q -m cuda tests/cuda -k "$TEST_SELECTION" \
    --junitxml="$OUT/tests.xml"
stage ddp 120 "$PY" -m pytest -p no:cacheprovider -q -m cuda tests/cuda/test_ddp.py \
    --junitxml="$OUT/ddp.xml"
if [ "$DRY_RUN" = 0 ] && [ "$GPUS" -ge 2 ]; then
    stage ddp-cli 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 \
        -m ssl_speech.train trainer.device=cuda data.synthetic.hours=0.1 \
        data.batch_size=8 trainer.max_steps=20 trainer.checkpoint_every=10 \
        trainer.val_every=10 trainer.progress=false trainer.tensorboard=false \
        probe.enabled=false "run_dir=$OUT/ddp-cli-run"
fi

# The benchmark's cases, NAME=OVERRIDES. CPC_audio's configuration scores densely (every
# prediction against every latent of the batch), whose score matrix grows as the batch squared
# and caps the batch that fits; the gathered scores are timed beside it.
GPU_CASES=("cpc_audio=experiment=cpc_audio"
           "cpc_audio-gather=experiment=cpc_audio objective.score_method=gather"
           "default=")
TINY="encoder.dim=16 context.dim=16 objective.num_steps=4 objective.num_negatives=8 \
data.window=3200"

# The batch each case of an eager run was timed at, as "NAME BATCH" lines.
found_batches() {
    "$PY" -c 'import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    if row["kind"] == "step":
        print(row["case"], row["batch_size"])' "$1" 2>/dev/null
}

# benchmark PRECISION MODE BUDGET, MODE eager, compiled or profiled: eager runs search each
# case's largest batch; compiled and profiled runs reuse the batch the eager run found (a case
# it left none for runs at its config's batch).
benchmark() {
    local precision="$1" mode="$2" budget="$3" name="bench-$1"
    local extra=() cases=() case
    if [ "$DRY_RUN" = 1 ]; then
        # One tiny case per precision (each case is a process: start-up dominates here).
        if [ "$precision" = 32 ]; then
            cases=("cpc_audio=experiment=cpc_audio $TINY")
        else
            cases=("default=$TINY encoder.n_mels=20")
        fi
        extra+=(--threads 1 --batch-size 2 --max-batch-size 4 --warmup 1 --repeats 1
                --matmul-size 64)
    else
        cases=("${GPU_CASES[@]}")
        # The warm-up steps carry the compilation; a 2048² product is too small to near a
        # datacenter GPU's peak, so the matmul probe uses 8192².
        extra+=(--warmup 2 --repeats 3 --matmul-size 8192)
    fi
    if [ "$mode" != eager ]; then
        [ "$mode" = compiled ] && extra+=(--compile)
        [ "$mode" = profiled ] && extra+=(--profile)
        local eager="$OUT/$name.jsonl" batches
        name="$name-$mode"
        batches="$(found_batches "$eager")"
        if [ -n "$batches" ]; then
            local with_batch=()
            for case in "${cases[@]}"; do
                local batch
                batch=$(echo "$batches" | awk -v n="${case%%=*}" '$1 == n {print $2}')
                with_batch+=("$case${batch:+ data.batch_size=$batch}")
            done
            cases=("${with_batch[@]}")
        elif [ "$DRY_RUN" = 0 ]; then
            extra+=(--batch-size 64 --max-batch-size 4096)
        fi
    elif [ "$DRY_RUN" = 0 ]; then
        extra+=(--batch-size 64 --max-batch-size 4096)
    fi
    for case in "${cases[@]}"; do
        extra+=(--case "$case")
    done
    stage "$name" "$budget" "$PY" scripts/benchmark.py --device "$DEVICE" \
        --precision "$precision" --no-data --quiet "${extra[@]}" \
        --jsonl "$OUT/$name.jsonl" --markdown "$OUT/$name.md"
    if [ -s "$OUT/$name.jsonl" ]; then
        cat "$OUT/$name.jsonl" >> "$RESULTS"
        { echo; cat "$OUT/$name.md"; echo; } >> "$SUMMARY"
    fi
}

benchmark bf16 eager 130
benchmark 32 eager 110
if [ "$DRY_RUN" = 1 ]; then
    # Inductor's CPU compile of even a tiny step takes longer than the whole dry run.
    echo "== bench-*-compiled: not run under --dry-run (the same command with --compile)"
    echo "- bench-*-compiled: not run (dry run)" >> "$SUMMARY"
else
    benchmark bf16 compiled 140
    benchmark 32 compiled 120
    benchmark bf16 profiled 80
fi

echo
echo "done in $(( $(date +%s) - START ))s: $SUMMARY"
cat "$SUMMARY"
if grep -q '"result": "\(failed\|timed out\)' "$STAGES"; then
    exit 1
fi
exit 0
