"""Plain vs tiled InfoNCE: time and peak memory of one forward+backward of the symmetric loss.

    python benchmarks/loss_memory.py                 # CPU, reduced sizes (B up to 16384, d=128)
    python benchmarks/loss_memory.py --gpu           # CUDA: B from 4096 up to 65536+, d=512, fp32 and bf16

The loss is ``mmcore.info_nce_pair_rows`` (both directions of a symmetric term, as the runner computes it in one
process): plain = one ``[B, B]`` logits matrix, tiled = one tiled sweep that never builds it.
Each configuration runs in a fresh subprocess, so peak memory is that configuration's alone: peak CUDA memory
allocated on a GPU, peak resident set size (minus the process's size before the loss) on the CPU. Prints a table
with the tiled/plain ratios measured in the same run.
"""

import argparse
import json
import subprocess
import sys

from measure import time_and_peak  # benchmarks/measure.py (this script's folder is on sys.path)


def one(batch: int, dim: int, dtype: str, tile: int, device: str, repeats: int) -> dict:
    import torch

    import mmcore

    torch.manual_seed(0)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    q = torch.nn.functional.normalize(torch.randn(batch, dim, device=device), dim=1).to(dt).requires_grad_(True)
    k = torch.nn.functional.normalize(torch.randn(batch, dim, device=device), dim=1).to(dt).requires_grad_(True)
    scale = torch.tensor(2.6, device=device).exp().requires_grad_(True)

    def step():  # the symmetric loss as the runner computes it in one process
        rows, back = mmcore.info_nce_pair_rows(q, k, scale, tile_size=tile)
        ((rows.float().mean() + back.float().mean()) / 2).backward()

    return time_and_peak(step, device, repeats)


def run_isolated(args: list) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--one", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["failed"]
        return {"error": "OOM" if "out of memory" in proc.stderr.lower() else tail[0][:60]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default: per device)")
    parser.add_argument("--dtypes", default=None, help="comma-separated, from fp32,bf16 (default: per device)")
    parser.add_argument("--one", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        b, d, dtype, tile, device, repeats = args.one
        print(json.dumps(one(int(b), int(d), dtype, int(tile), device, int(repeats))))
        return
    if args.gpu:
        device, dim, tile = "cuda", 512, args.tile or 8192
        batches, dtypes, repeats = [4096, 8192, 16384, 32768, 49152, 65536, 131072], ["bf16", "fp32"], 3
    else:
        device, dim, tile = "cpu", 128, args.tile or 1024
        batches, dtypes, repeats = [1024, 4096, 8192], ["fp32"], 2
    batches = [int(b) for b in args.batches.split(",")] if args.batches else batches
    dtypes = args.dtypes.split(",") if args.dtypes else dtypes
    print(f"device={device} d={dim} tile={tile} (symmetric loss, forward + backward)")
    print(f"{'dtype':>5} {'B':>7} | {'plain s':>8} {'plain MiB':>10} | {'tiled s':>8} {'tiled MiB':>10} | "
          f"{'time x':>6} {'mem x':>6}")
    for dtype in dtypes:
        for batch in batches:
            plain = run_isolated([batch, dim, dtype, 0, device, repeats])
            tiled = run_isolated([batch, dim, dtype, tile, device, repeats])

            def cell(r):
                if "error" in r:
                    return f"{r['error']:>8} {'':>10}"
                return f"{r['seconds']:>8.3f} {r['peak_bytes'] / 2**20:>10.1f}"

            ratio = ""
            if "error" not in plain and "error" not in tiled:
                ratio = f"{tiled['seconds'] / plain['seconds']:>6.2f} {tiled['peak_bytes'] / max(plain['peak_bytes'], 1):>6.3f}"
            print(f"{dtype:>5} {batch:>7} | {cell(plain)} | {cell(tiled)} | {ratio}", flush=True)


if __name__ == "__main__":
    main()
