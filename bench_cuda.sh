#!/usr/bin/env bash
# One prepared check for a CUDA machine, under 10 minutes on one H100: the CUDA tests, bench.py on CUDA,
# and 3 epochs of WEAT-adv ResNet-18 on the CIFAR-10 copy in bf16 against the same run in float32.
#
# Before (on the machine with ../shared):
#   mkdir -p device_data && cp ../shared/data/cifar10-jpeg.npz ../shared/data/decode_cifar10.py device_data/
# Then, on the GPU machine, from the repo root:   bash bench_cuda.sh      (outputs under $OUT)
# SUBSET=N trains on the first N images (default 10000, to stay within 10 minutes); SUBSET=all for 49,000.
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-bench-cuda-out}
SUBSET=${SUBSET:-10000}
mkdir -p "$OUT"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
    | tee "$OUT/env.txt"

echo "== CUDA checks" | tee "$OUT/cuda-checks.txt"
timeout 120 python -m pytest -q -p no:cacheprovider tests/cuda_checks.py 2>&1 | tail -15 | tee -a "$OUT/cuda-checks.txt"

echo "== bench.py" | tee "$OUT/bench.txt"
timeout 240 python bench.py --device cuda --quick 2>&1 | tail -20 | tee -a "$OUT/bench.txt"

echo "== 3 epochs of WEAT-adv, bf16 against float32"
if [ ! -f device_data/cifar10/cifar10_train.npz ]; then
    python device_data/decode_cifar10.py device_data/cifar10 || { echo "no CIFAR-10 copy: see the top of this file"; exit 1; }
fi
subset=(); [ "$SUBSET" != all ] && subset=(--train-subset "$SUBSET")
for amp in bf16 none; do
    timeout 100 python train.py --dataset npz --train-npz device_data/cifar10/cifar10_train.npz \
        --test-npz device_data/cifar10/cifar10_test.npz --weat adv --epochs 3 "${subset[@]}" --amp "$amp" \
        $([ "$amp" = bf16 ] && echo --channels-last) --out-dir "$OUT/weat-adv-$amp" --overwrite 2>&1 \
        | grep -v "it/s\]\|s/it\]" | tail -5
done
python - "$OUT" <<'PY' | tee "$OUT/runs.txt"
import json, os, sys
for amp in ("bf16", "none"):
    path = os.path.join(sys.argv[1], f"weat-adv-{amp}", "log.jsonl")
    if not os.path.exists(path):
        print(f"{amp}: no log (the run failed or timed out)")
        continue
    rows = [json.loads(line) for line in open(path)]
    print(f"{amp:>5}: " + "; ".join(f"epoch {r['epoch']} {r['seconds']:.1f} s val clean {100 * r['val_nat_acc']:.1f}% "
                                    f"PGD-20 {100 * r['val_pgd_acc']:.1f}%" for r in rows))
PY
