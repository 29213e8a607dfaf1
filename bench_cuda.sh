#!/usr/bin/env bash
# One prepared check for a CUDA machine, sized for a 10-minute limit (its steps' timeouts add up to 9 min
# 20 s): the CUDA tests, bench.py on CUDA, 3 epochs of WEAT-adv ResNet-18 on CIFAR-10 in bf16 against the
# same run in float32, and the standard cascade on 1,000 test points of the bf16 model.
#
# On the GPU machine, from the repo root:   bash bench_cuda.sh [DATA]
# DATA is a folder holding cifar10_train.npz and cifar10_test.npz (train.py's --dataset npz layout), or
# else the folder where torchvision keeps CIFAR-10 (train.py's --data-dir; downloaded there if it is not there
# yet, which a machine without network cannot: its training and evaluation then fail, the rest still runs).
# Without DATA: data/.
# SUBSET=N trains on the first N images (default 10000, to stay within 10 minutes); SUBSET=all trains on
# 49,000, which needs TRAIN_TIMEOUT (seconds per run, default 100) of about 300.
# OUT (default bench-cuda-out) receives 8 small files, the layout tools/gpu_record.py reads (files of an
# earlier run there are removed first):
#   env.txt, cuda-checks.txt, bench.txt, log-fp32.jsonl, log-bf16.jsonl, args-fp32.json, eval-bf16.json, runs.txt
# The training runs themselves (checkpoints included) go to RUNS (default: a new temporary folder).
set -uo pipefail
DATA=$(realpath -m "${1:-data}")  # before the cd below, so that relative paths mean the caller's folder
OUT=$(realpath -m "${OUT:-bench-cuda-out}")
RUNS=$(realpath -m "${RUNS:-$(mktemp -d)}")
cd "$(dirname "$0")"
SUBSET=${SUBSET:-10000}
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-100}
if [ -f "$DATA/cifar10_train.npz" ] && [ -f "$DATA/cifar10_test.npz" ]; then
    data=(--dataset npz --train-npz "$DATA/cifar10_train.npz" --test-npz "$DATA/cifar10_test.npz")
else
    data=(--dataset cifar10 --data-dir "$DATA")
    [ -d "$DATA/cifar-10-batches-py" ] || echo "no CIFAR-10 in $DATA yet: train.py downloads it, where the machine can"
fi
mkdir -p "$OUT"
rm -f "$OUT"/{env.txt,cuda-checks.txt,bench.txt,runs.txt,log-fp32.jsonl,log-bf16.jsonl,args-fp32.json,eval-bf16.json}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | head -2 \
      || echo "name, memory.total [MiB], driver_version"
  python -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
  nproc; } | tee "$OUT/env.txt"

echo "== CUDA checks" | tee "$OUT/cuda-checks.txt"
timeout 90 python -m pytest -q -p no:cacheprovider tests/cuda_checks.py 2>&1 | tail -15 | tee -a "$OUT/cuda-checks.txt"

echo "== bench.py" | tee "$OUT/bench.txt"
timeout 180 python bench.py --device cuda --quick --models resnet18 2>&1 | tail -20 | tee -a "$OUT/bench.txt"

echo "== 3 epochs of WEAT-adv, bf16 against float32, data: ${data[*]}"
subset=(); [ "$SUBSET" != all ] && subset=(--train-subset "$SUBSET")
for amp in bf16 none; do
    timeout "$TRAIN_TIMEOUT" python train.py "${data[@]}" --weat adv --epochs 3 "${subset[@]}" --amp "$amp" \
        $([ "$amp" = bf16 ] && echo --channels-last) --out-dir "$RUNS/weat-adv-$amp" --overwrite 2>&1 \
        | grep -v "it/s\]\|s/it\]" | tail -5
done
[ -f "$RUNS/weat-adv-none/log.jsonl" ] && cp "$RUNS/weat-adv-none/log.jsonl" "$OUT/log-fp32.jsonl"
[ -f "$RUNS/weat-adv-none/args.json" ] && cp "$RUNS/weat-adv-none/args.json" "$OUT/args-fp32.json"
[ -f "$RUNS/weat-adv-bf16/log.jsonl" ] && cp "$RUNS/weat-adv-bf16/log.jsonl" "$OUT/log-bf16.jsonl"

echo "== the standard cascade on 1,000 test points of the bf16 model"
[ -f "$RUNS/weat-adv-bf16/last.pt" ] && timeout 90 python evaluate.py --ckpt "$RUNS/weat-adv-bf16/last.pt" \
    --n-examples 1000 --out "$RUNS/eval-bf16.json" 2>&1 | grep -v "it/s\]\|s/it\]" | tail -5
[ -f "$RUNS/eval-bf16.json" ] && cp "$RUNS/eval-bf16.json" "$OUT/eval-bf16.json"  # its -mask.npz stays in RUNS

python - "$OUT" <<'PY' | tee "$OUT/runs.txt"
import json, os, sys
for name in ("log-bf16.jsonl", "log-fp32.jsonl"):
    path = os.path.join(sys.argv[1], name)
    if not os.path.exists(path):
        print(f"{name}: no log (the run failed or timed out)")
        continue
    rows = [json.loads(line) for line in open(path)]
    print(f"{name}: " + "; ".join(f"epoch {r['epoch']} {r['seconds']:.1f} s val clean {100 * r['val_nat_acc']:.1f}% "
                                   f"PGD-20 {100 * r['val_pgd_acc']:.1f}%" for r in rows))
PY
printf 'To record it: python tools/gpu_record.py %q --commit %s --date %s --results results/gpu-NAME.json\n' \
    "$OUT" "$(git rev-parse --short HEAD 2>/dev/null || echo COMMIT)" "$(date +%F)"
