#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md, in one go: bash benchmarks/gpu.sh OUT_DIR [PART ...]
#
# PART is any of: smoke (the default recipe trained on the GPU), loss (plain vs tiled loss, fp32 and bf16),
# retrieval (1M x 512 gallery), throughput (mmcore vs a hand-written loop: fp32, bf16, bf16 + torch.compile),
# cached (plain vs checkpointed vs cached step, ViT-B/16 + BERT-base, bf16, B up to 65,536),
# fused (fused Triton InfoNCE kernels vs GEMM, plain loss, PyTorch tiles, torch.compile'd tiles, inf-cl; d = 512, bf16,
# B up to 1,048,576). Default: all six. Each part's output goes to OUT_DIR/<part>.log as well as to the terminal.
# Needs mmcore and its plugins installed (pip install -r requirements.txt) and one CUDA GPU.
set -u
out=${1:?usage: benchmarks/gpu.sh OUT_DIR [smoke|loss|retrieval|throughput|cached|fused ...]}
shift
parts=${*:-smoke loss retrieval throughput cached fused}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONUNBUFFERED=1

run_part() {
    local name=$1; shift
    echo "=== $name: $*" | tee "$out/$name.log"
    local start=$SECONDS
    "$@" 2>&1 | grep --line-buffered -v -E "Warning|warn\(|^\s*$" | tee -a "$out/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$out/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.log"
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" \
    | tee -a "$out/device.log"

for part in $parts; do
    case $part in
        smoke) run_part smoke mmcore run "$here/../recipes/centrobind.toml" --out "${TMPDIR:-/tmp}/mmcore-gpu-smoke-$$" \
                   --set trainer.accelerator='"gpu"' ;;
        loss) run_part loss python3 "$here/loss_memory.py" --gpu ;;
        retrieval) run_part retrieval python3 "$here/retrieval.py" --gallery 1000000 --dim 512 --queries 10000 ;;
        throughput) run_part throughput python3 "$here/throughput.py" --gpu --sweep ;;
        cached) run_part cached python3 "$here/cached_step.py" --device cuda --size vit-b16 ;;
        fused) run_part fused python3 "$here/fused_loss.py" ;;
        *) echo "unknown part: $part (smoke, loss, retrieval, throughput, cached, fused)"; exit 2 ;;
    esac
done
