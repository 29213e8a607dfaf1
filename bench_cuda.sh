#!/usr/bin/env bash
# One prepared check for a CUDA machine, sized for a 10-minute limit (its steps' timeouts add up to 9 min
# 20 s): the CUDA tests, bench.py on CUDA, 3 epochs of WEAT-adv ResNet-18 on CIFAR-10 in bf16 against the
# same run in float32, and the standard cascade on 1,000 test points of the bf16 model.
#
# On the GPU machine, from the repo root:   bash bench_cuda.sh [DATA]
# DATA is a folder holding cifar10_train.npz and cifar10_test.npz (train.py's --dataset npz layout), or
# else the folder where torchvision keeps CIFAR-10 (train.py's --data-dir; downloaded there if it is not
# there yet). Without DATA: torchvision's CIFAR-10 in data/, downloaded on first use.
# SUBSET=N trains on the first N images (default 10000, to stay within 10 minutes); SUBSET=all for 49,000.
# OUT (default bench-cuda-out) receives 8 small files, the layout tools/gpu_record.py reads:
#   env.txt, cuda-checks.txt, bench.txt, log-fp32.jsonl, log-bf16.jsonl, args-fp32.json, eval-bf16.json, runs.txt
# The training runs themselves (checkpoints included) go to RUNS (default: a new temporary folder).
set -uo pipefail
DATA=$(realpath -m "${1:-data}")  # before the cd below, so that a relative DATA means the caller's folder
cd "$(dirname "$0")"
OUT=${OUT:-bench-cuda-out}
RUNS=${RUNS:-$(mktemp -d)}
SUBSET=${SUBSET:-10000}
if [ -f "$DATA/cifar10_train.npz" ] && [ -f "$DATA/cifar10_test.npz" ]; then
    data=(--dataset npz --train-npz "$DATA/cifar10_train.npz" --test-npz "$DATA/cifar10_test.npz")
else
    data=(--dataset cifar10 --data-dir "$DATA")
fi
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
  nproc; } | tee "$OUT/env.txt"

echo "== CUDA checks" | tee "$OUT/cuda-checks.txt"
timeout 90 python -m pytest -q -p no:cacheprovider tests/cuda_checks.py 2>&1 | tail -15 | tee -a "$OUT/cuda-checks.txt"

echo "== bench.py" | tee "$OUT/bench.txt"
timeout 180 python bench.py --device cuda --quick 2>&1 | tail -20 | tee -a "$OUT/bench.txt"

echo "== 3 epochs of WEAT-adv, bf16 against float32, data: ${data[*]}"
subset=(); [ "$SUBSET" != all ] && subset=(--train-subset "$SUBSET")
for amp in bf16 none; do
    timeout 100 python train.py "${data[@]}" --weat adv --epochs 3 "${subset[@]}" --amp "$amp" \
        $([ "$amp" = bf16 ] && echo --channels-last) --out-dir "$RUNS/weat-adv-$amp" --overwrite 2>&1 \
        | grep -v "it/s\]\|s/it\]" | tail -5
done
[ -f "$RUNS/weat-adv-none/log.jsonl" ] && cp "$RUNS/weat-adv-none/log.jsonl" "$OUT/log-fp32.jsonl"
[ -f "$RUNS/weat-adv-none/args.json" ] && cp "$RUNS/weat-adv-none/args.json" "$OUT/args-fp32.json"
[ -f "$RUNS/weat-adv-bf16/log.jsonl" ] && cp "$RUNS/weat-adv-bf16/log.jsonl" "$OUT/log-bf16.jsonl"

echo "== the standard cascade on 1,000 test points of the bf16 model"
[ -f "$RUNS/weat-adv-bf16/last.pt" ] && timeout 90 python evaluate.py --ckpt "$RUNS/weat-adv-bf16/last.pt" \
    --n-examples 1000 --out "$OUT/eval-bf16.json" 2>&1 | grep -v "it/s\]\|s/it\]" | tail -5

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
echo "To record it: python tools/gpu_record.py $OUT --commit $(git rev-parse --short HEAD 2>/dev/null || echo COMMIT)" \
     "--date $(date +%F) --results results/gpu-NAME.json"
