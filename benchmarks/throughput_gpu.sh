#!/usr/bin/env bash
# Issue O's GPU figures in ONE command, on one GPU (an H100), within 8 minutes including start-up:
#
#   bash benchmarks/throughput_gpu.sh            # from the repository root, the venv's python on PATH
#
# It writes benchmarks/results/throughput_cuda.json (MNIST VAE) and throughput_cuda_diffae.json (the
# diffusion autoencoder), each rewritten after every section, so a part cut short by its time limit keeps
# what it measured. Commit both with the GPU named (the JSON's "device").
#
# 1. MNIST VAE (about 3 minutes): 1k and 10k test digits (the 1,000 embedded digits repeated): one batch,
#    compaction alone in chunks vs refilling at max_batch 1000 and 2500, the roofline replay and its ratio;
#    compaction every 4 and 16 steps (fewer host syncs); bf16 autocast; 200 digits one at a time; the
#    data-set run of 10k digits in shards of 1000 (one batch per shard vs refilling groups of 10 shards);
#    quality gates (flip >= 99 %, oracle agreement >= 95 %) on the 1,000 test digits.
# 2. mnist-diffae (about 3.5 minutes): 1k digits, refilling at max_batch 500 (20 DDIM steps, no gradient
#    checkpointing, at most 200 steps, as benchmarks/diffae.py), vs 3 digits one image at a time.
#
# Done when (issue O): >= 10,000 VAE counterfactuals per second over 10k digits, flip >= 99 %, oracle >= 95 %,
# >= 50x one image at a time, wall time <= 1.5x the roofline replay.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 230 "$PY" benchmarks/throughput.py --device cuda --generator mnist-vae \
    --grid 1000:250,10000:1000,10000:2500 --check-every 4,16 --autocast --per-image-n 200 \
    --dataset-n 10000 --shard-size 1000 --group-shards 10 --replay 20 \
    --out benchmarks/results/throughput_cuda.json > /tmp/throughput_cuda.log 2>&1
echo "VAE part: exit $?"; tail -40 /tmp/throughput_cuda.log
timeout 230 "$PY" benchmarks/throughput.py --device cuda --generator mnist-diffae --modes refill \
    --grid 1000:500 --max-steps 200 --ddim-steps 20 --check-every "" --per-image-n 3 --dataset-n 0 --replay 3 \
    --out benchmarks/results/throughput_cuda_diffae.json > /tmp/throughput_cuda_diffae.log 2>&1
echo "diffae part: exit $?"; tail -20 /tmp/throughput_cuda_diffae.log
