"""SigLIP plain vs tiled (``mmcore.blockwise_rows``): time and peak memory of one forward+backward.

    python benchmarks/siglip_tiled.py                        # CPU: B=4096, d=128, tile 1024
    python benchmarks/siglip_tiled.py --batches 4096,8192 --tile 512

The loss is the siglip plugin's module (``pip install -e plugins/siglip``) on a symmetric term, as the runner
computes it in one process without ``pair_rows``: ``rows(q, k)`` and ``rows(k, q)``, averaged. Plain builds the
``[B, B]`` matrix; tiled checkpoints ``tile x tile`` blocks and recomputes them in backward. Each configuration
runs in a fresh subprocess, so its peak memory is its own: peak resident set size minus the process's size before
the loss on the CPU, peak CUDA memory allocated on a GPU. Prints a table with the tiled/plain ratios.

CPU memory, two precautions: the subprocesses run with ``MALLOC_MMAP_THRESHOLD_=65536`` (glibc then returns every
large freed tensor at once, so the resident size follows the live tensors instead of what malloc keeps), and both
configurations first run one tiny tiled call, outside the measurement (the first ``torch.utils.checkpoint`` call
imports ``torch._dynamo`` and sympy, ~80 MiB, once per process; a training run has imported them already).
"""

import argparse
import json
import os
import subprocess
import sys

from measure import time_and_peak  # benchmarks/measure.py (this script's folder is on sys.path)


def one(batch: int, dim: int, tile: int, device: str, repeats: int) -> dict:
    import torch

    from mmcore_siglip.plugin import SigLIPConfig, build_siglip

    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(batch, dim, device=device), dim=1).requires_grad_(True)
    k = torch.nn.functional.normalize(torch.randn(batch, dim, device=device), dim=1).requires_grad_(True)
    loss = build_siglip(SigLIPConfig(tile_size=tile), None).to(device)
    targets = torch.arange(batch, device=device)

    import mmcore

    tiny = torch.randn(4, dim, device=device, requires_grad=True)  # the one-time imports, before measuring
    mmcore.blockwise_rows(lambda s, p, a: s.sum(1), tiny, tiny, torch.arange(4), tile_size=2).sum().backward()

    def step():  # a symmetric term as the runner computes it (every row valid, no labels)
        forward = loss.rows(q, k, targets, None, None, "forward", term="x-y")
        reverse = loss.rows(k, q, targets, None, None, "reverse", term="x-y")
        ((forward.mean() + reverse.mean()) / 2).backward()

    return time_and_peak(step, device, repeats)


def run_isolated(args: list) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, __file__, "--one", *map(str, args)], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["failed"]
        return {"error": "OOM" if "out of memory" in proc.stderr.lower() else tail[0][:60]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cell(result: dict) -> str:
    if "error" in result:
        return f"{result['error']:>8} {'':>10}"
    return f"{result['seconds']:>8.3f} {result['peak_bytes'] / 2**20:>10.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batches", default="4096", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        b, d, tile, device, repeats = args.one
        print(json.dumps(one(int(b), int(d), int(tile), device, int(repeats))))
        return
    device = "cuda" if args.gpu else "cpu"
    print(f"device={device} d={args.dim} tile={args.tile} fp32 (siglip, symmetric term, forward + backward)")
    print(f"{'B':>7} | {'plain s':>8} {'plain MiB':>10} | {'tiled s':>8} {'tiled MiB':>10} | "
          f"{'time x':>6} {'mem x':>6}")
    for batch in (int(b) for b in args.batches.split(",")):
        plain = run_isolated([batch, args.dim, 0, device, args.repeats])
        tiled = run_isolated([batch, args.dim, args.tile, device, args.repeats])
        ratio = ""
        if "error" not in plain and "error" not in tiled:
            ratio = (f"{tiled['seconds'] / plain['seconds']:>6.2f} "
                     f"{tiled['peak_bytes'] / max(plain['peak_bytes'], 1):>6.3f}")
        print(f"{batch:>7} | {cell(plain)} | {cell(tiled)} | {ratio}", flush=True)


if __name__ == "__main__":
    main()
