#!/usr/bin/env bash
# The GPU checks of issues 5 and 6, run on a lent GPU machine from the repository root:
#
#   bash benchmarks/device/run.sh cifar   # issue 5: CIFAR-10 from scratch, hybrid, wide hybrid and plain ViT side by side
#   bash benchmarks/device/run.sh bench   # issue 6: ViT-B/16 bf16 training step vs OpenCLIP, MFU; then the
#                                         # CIFAR augmentation benchmark (PIL vs batches on the GPU)
#   bash benchmarks/device/run.sh smoke   # the same two at toy sizes, to check the set-up (8 files back,
#                                         # no figures; 3.4 min on 2 CPU cores, seconds on a GPU machine)
#   bash benchmarks/device/run.sh smoke-cifar bench   # several in turn; smoke-cifar runs the CIFAR path at toy
#                                         # sizes into separate folders (smoke-*), so a later full run cannot
#                                         # resume from it on the same warm machine
#   CIFAR_FLAGS="--time-budget-minutes 7 --time-limit-minutes 7.7" bash benchmarks/device/run.sh cifar   # flags for all runs
#   BENCH_TIMEOUT=200 AUGMENT_TIMEOUT=60 bash benchmarks/device/run.sh bench   # bounds of its two benchmark runs, s
#
# It expects .device/ from prepare.sh (carried by the device tool) and writes what should come back into
# $OUT (at most 8 files). See README.md beside it for the device tool's call and the time it costs.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/kizuna-device-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}  # the device's python3 holds torch; here: PYTHON=.venv/bin/python

# set-up: carried wheels into a private site folder, the shared data into /tmp/shared
if [ -d .device/wheels ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .device/wheels/*.whl || exit 1
fi
export PYTHONPATH="$PWD/src:$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -f .device/shared.tar.gz ]; then
    if mkdir -p /tmp/shared && tar xzf .device/shared.tar.gz -C /tmp/shared; then
        export KIZUNA_SHARED=/tmp/shared
    else  # say so: the runs below would otherwise fail later on data that is simply missing
        echo "warning: could not unpack .device/shared.tar.gz; using ${KIZUNA_SHARED:-../shared}" >&2
    fi
fi
export KIZUNA_SHARED=${KIZUNA_SHARED:-../shared}
"$PY" - <<'PYEOF' | tee "$OUT/machine.txt"
import os, torch, kizuna
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
print(f"torch {torch.__version__}, {gpu}, {os.cpu_count()} CPUs, kizuna from {kizuna.__file__}")
PYEOF
[ $? -eq 0 ] || { echo "kizuna does not import with $PY" >&2; exit 1; }

cifar() {  # $1 = extra flags for all runs; OUT_PREFIX (smoke-) keeps a smoke run's folders and files apart
    local quick=${1:-} pre=${OUT_PREFIX:-}
    # Three runs share the GPU, each augmenting on it (augment_on="device" in the config: the training set
    # is decoded once, so the CPU cores no longer set the pace as they did on 2026-12-04, when the PIL
    # loaders held both runs at ~11,000 images/s and the GPU at 9% of its peak):
    #   hybrid - the config as it is (the 82.95% model of the first run, now with more epochs);
    #   wide   - the same stem under a wider, deeper Transformer (width 384, depth 8: 14.6 M parameters,
    #            1.73 GFLOP forward, 2.9x the hybrid), at lr 1e-3 (the 1/width rule from 2e-3 at 256, rounded down);
    #   vit    - a plain ViT with 4-px patches (width 384, depth 7) at 2e-3 x 96/384 = 5e-4 (it diverged at
    #            the hybrid's 2e-3 on the H200; the width-96 CPU recipe's rate with Adam's rate scaled as 1/width).
    # Workers only decode the training set once and feed the evaluations. All three run eagerly: each plans
    # its length from the pace it measures while the others run, so none may change its own pace after the
    # others planned (a compile of one minute in one of them would: the others would plan on a GPU it is not
    # yet using, then slow down and overrun). CIFAR_FLAGS should carry a hard --time-limit-minutes too.
    # A warm machine keeps /tmp between calls: without this a second call would resume the first's runs
    # (or find them finished) instead of training afresh.
    rm -rf /tmp/runs/${pre}c10-hybrid /tmp/runs/${pre}c10-wide /tmp/runs/${pre}c10-vit /tmp/${pre}fig-vit
    local cpus; cpus=$(nproc); local w=$(( cpus > 8 ? cpus / 4 : 1 ))
    local common=(--config vit_cifar10_gpu --workers "$w" --progress false)
    "$PY" -m kizuna.apps.cli vit train "${common[@]}" --out /tmp/runs/${pre}c10-hybrid $quick \
        > "$OUT/${pre}c10-hybrid.log" 2>&1 &
    local a=$!
    "$PY" -m kizuna.apps.cli vit train "${common[@]}" --lr 1e-3 --warmup-steps 500 \
        --model-overrides '{"stem_channels": [64, 128], "width": 384, "depth": 8, "heads": 6, "mlp_dim": 1536}' \
        --out /tmp/runs/${pre}c10-wide $quick > "$OUT/${pre}c10-wide.log" 2>&1 &
    local b=$!
    "$PY" -m kizuna.apps.cli vit train "${common[@]}" --model S/4 --model-overrides '{"depth": 7}' --lr 5e-4 \
        --out /tmp/runs/${pre}c10-vit $quick > "$OUT/${pre}c10-vit.log" 2>&1 &
    local c=$!
    wait $a; local ra=$?; wait $b; local rb=$?; wait $c; local rc=$?
    # the three metrics.jsonl in one file (8 files come back at most; a smoke run's logs say enough)
    if [ -z "$pre" ]; then
        tar czf "$OUT/c10-metrics.tar.gz" -C /tmp/runs --ignore-failed-read \
            c10-hybrid/metrics.jsonl c10-wide/metrics.jsonl c10-vit/metrics.jsonl 2>/dev/null || true
    fi
    # Issue 5 (b): does a ViT trained for many epochs learn local attention in its low layers? The figures
    # and numbers of the plain ViT (report.json holds every section's numbers); a smoke run only checks it runs.
    if [ $rc -eq 0 ]; then
        if "$PY" -m kizuna.apps.cli analyze all /tmp/runs/${pre}c10-vit/model --images "$KIZUNA_SHARED/data/cifar10/test" \
            --max-images 64 --out /tmp/${pre}fig-vit > /dev/null 2>&1; then
            echo "analysis of the plain ViT: ok"
            [ -n "$pre" ] || cp /tmp/fig-vit/report.json "$OUT/c10-vit.analysis.json"
            [ -n "$pre" ] || cp /tmp/fig-vit/attention_distance.png /tmp/fig-vit/positions.png "$OUT/"
        else
            echo "analysis of the plain ViT failed"
        fi
    fi
    echo "cifar: hybrid exit $ra, wide exit $rb, vit exit $rc"
    [ $ra -eq 0 ] && [ $rb -eq 0 ] && [ $rc -eq 0 ]
}

bench() {  # $1 = --quick for a smoke run
    # Start from the committed results so the returned results.json is the whole suite with these sections
    # added (`--only` keeps the other sections); back here: `python -m benchmarks --merge` it (README.md).
    # A smoke run starts from nothing instead: a --quick result never replaces a measured section.
    rm -f "$OUT/results.json"
    [ -n "${1:-}" ] || cp benchmarks/results.json "$OUT/results.json"
    # bounded, so a slow compile cannot eat the time of what runs after it in the same call (-k: a run that
    # ignores the TERM is killed 10 s later), and a torch.profiler table of the fastest kizuna step comes
    # back with it (the MFU gap, issue 6)
    KIZUNA_GPU_PROFILE="$OUT/gpu_profile.txt" timeout -k 10 "${BENCH_TIMEOUT:-300}" "$PY" -m benchmarks --only gpu_train_step ${1:-} --out "$OUT/BENCHMARKS.md" \
        --json "$OUT/results.json" 2>&1 | tee "$OUT/bench.log" | grep -v '%|'
    local rb=${PIPESTATUS[0]}
    # then the augmentation on this machine's CPU and GPU (issue 5's pace), into the same results; its own run,
    # so that a failure here cannot cost the step's figures. Measured where CUDA is, it is stored as
    # cifar_augment@gpu, beside (not over) the CPU machine's cifar_augment.
    timeout -k 10 "${AUGMENT_TIMEOUT:-120}" "$PY" -m benchmarks --only cifar_augment ${1:-} --out "$OUT/BENCHMARKS.md" \
        --json "$OUT/results.json" 2>&1 | tee -a "$OUT/bench.log" | grep -v '%|'
    local ra=${PIPESTATUS[0]}
    [ "$rb" -eq 0 ] && [ "$ra" -eq 0 ]
}

QUICK_CIFAR="--time-budget-minutes 0.3 --warmup-steps 5 --subset-fraction 0.1 --val-max-samples 1000 \
             --batch-size 64 --eval-batch-size 250"
status=0
for WHAT in "${@:-smoke}"; do
    case "$WHAT" in
        cifar) cifar "${CIFAR_FLAGS:-}" || status=1 ;;
        bench) bench || status=1 ;;
        smoke-cifar) OUT_PREFIX=smoke- cifar "$QUICK_CIFAR" || status=1 ;;
        smoke) { OUT_PREFIX=smoke- cifar "$QUICK_CIFAR" && bench --quick; } || status=1 ;;
        *) echo "usage: $0 cifar|bench|smoke|smoke-cifar ... (several run in turn)" >&2; exit 2 ;;
    esac
done
exit $status
