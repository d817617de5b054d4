"""The fused Triton InfoNCE kernels (issue 16) against cuBLAS and the other ways to compute the same loss: seconds,
peak memory and share of the GEMM rate of one symmetric InfoNCE forward + backward, all measured in one run.

    python benchmarks/fused_loss.py                          # CUDA: d = 512, bf16, B = 65,536 to 1,048,576
    python benchmarks/fused_loss.py --batches 65536,262144 --methods plain,torch,triton --step-batch 0   # short
    python benchmarks/fused_loss.py --check-cpu              # the same code path, tiny sizes, on the CPU

Rows (every loss row: ``q, k [B, d]`` unit rows in ``--dtype``, a learnable scale, no masks; one step = the loss
``(mean(rows) + mean(columns)) / 2`` and its backward to ``q``, ``k`` and the scale, gradients cleared first):

- ``gemm``: one ``8192 x 8192 x 8192`` product in ``--dtype`` (``torch.matmul``), the reference rate
  (``2 n^3`` FLOPs per product);
- ``plain``: ``mmcore.info_nce_pair_rows(tile_size=0)``, the ``[B, B]`` logits (two products in bf16 on CUDA);
  "does not fit" where CUDA runs out of memory (larger B are then not tried);
- ``torch``: mmcore's PyTorch tiles (``tile_size = --tile``, ``kernel = "torch"``);
- ``compile``: a sketch, not mmcore code: one block's work (the block's logits and the online log-sum-exp merge of
  its rows and columns) as a ``torch.compile``'d function, called in a Python loop over ``tile x tile`` blocks,
  each call under ``torch.utils.checkpoint`` so the backward recomputes the block (mmcore's tiles are an
  ``autograd.Function``, which ``torch.compile`` cannot trace whole);
- ``infcl``: inf-cl's ``cal_inf_loss`` (``pip install inf-cl``), once per direction: its kernels cast ``q`` and ``k``
  to fp32 and multiply in TF32, whatever ``--dtype`` is; CUDA only;
- ``triton``: mmcore's fused kernels (``tile_size = --tile``, ``kernel = "triton"``).

Columns:

- seconds per step: the fastest of up to ``--repeats`` timed steps (at least two, unless one alone takes longer than
  ``--budget`` seconds). Each method first runs one untimed step at ``min(B, --warm-batch)`` rows: compilation,
  and the fused kernels' autotuning, which Triton does once per ``d`` and dtype at the size of the first call
  (hence 65,536 rows by default, and the correctness check only after the timings);
- peak GiB: ``torch.cuda.max_memory_allocated`` over the timed steps minus what was allocated before them (``q``
  and ``k`` are not counted, their gradients are);
- % of the GEMM rate, counting a symmetric forward + backward as ``8 B^2 d`` FLOPs: one ``[B, B]`` product for
  both directions (``2 B^2 d``), its recomputation (``2 B^2 d``) and the dq and dk products (``2 x 2 B^2 d``).
  The fused kernels do more work than that (``benchmarks/RESULTS.md``);
- the time relative to the plain loss and to the PyTorch tiles at the same B.

``--step-batch``: also one optimizer step (AdamW) of a ``BindingModule`` (``mmcore.testing.tiny_recipe``:
two modalities, ``mlp`` encoders, ``pairwise``, ``infonce``) on ``B`` random feature rows, built by
``mmcore.testing.module_and_batch`` as ``tests/test_cached_step.py`` does and moved to the device: plain loss,
PyTorch tiles, fused kernels; under ``torch.autocast`` for bf16/fp16, as Lightning's ``bf16-mixed``. Its table
says in which dtype the embeddings reach the loss (autocast runs the products, not the Triton kernels, in bf16).

After the loss rows, a check compares the fused kernels with the PyTorch tiles and with a float64 plain loss at one
small B that no block divides, without and with masks (labels, invalid rows): values and gradients, largest
difference over the largest float64 magnitude, per quantity; it fails (exit 1, after the tables) when the fused
kernels are further from float64 than both twice the PyTorch tiles' distance and a tolerance (1e-5 in fp32, 1e-2
in bf16/fp16: a few roundings of the weights to the input dtype). On a GPU that checks the compiled kernels. (In
Triton 3.5's interpreter ``.to(bfloat16)`` rounds toward zero, compiled kernels round to nearest: the weights'
rounding then biases ``dscale`` by some 1e-3 under ``--check-cpu``.)

``--check-cpu``: everything at tiny sizes on the CPU (d = 32, B = 64 and 128, tile 16); the fused kernels run in
Triton's interpreter (``TRITON_INTERPRET=1``, set here before mmcore is imported). It proves the code path, not
speed.
"""

from __future__ import annotations

import argparse
import gc
import math
import platform
import sys
import time
import traceback

METHODS = ("plain", "torch", "compile", "infcl", "triton")
LABELS = {"plain": "plain loss", "torch": "PyTorch tiles", "compile": "torch.compile'd tiles (sketch)",
          "infcl": "inf-cl", "triton": "fused Triton kernels"}
STEP_MODES = {"plain": (0, "torch"), "torch": (None, "torch"), "triton": (None, "triton")}
"""training-step mode -> (tile_size, kernel); None: ``--tile``"""
GIB = 2 ** 30


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-cpu", action="store_true", help="tiny sizes on the CPU, fused kernels interpreted")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--dim", type=int, default=None, help="d (default 512; --check-cpu: 32)")
    parser.add_argument("--batches", default=None, help="comma-separated B (default 65536,131072,262144,1048576)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {','.join(METHODS)}")
    parser.add_argument("--tile", type=int, default=None, help="tile of the tiled rows (default 8192; CPU 16)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per cell at most (3; CPU 2)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed steps per cell, after two")
    parser.add_argument("--warm-batch", type=int, default=None, help="B of the untimed first step (65536; CPU 32)")
    parser.add_argument("--gemm", type=int, default=None, help="n of the n^3 reference GEMM (8192; CPU 256)")
    parser.add_argument("--check-batch", type=int, default=None, help="B of the correctness check (4099; CPU 37)")
    parser.add_argument("--step-batch", type=int, default=None,
                        help="B of the training-step rows, 0 for none (65536; CPU 64)")
    parser.add_argument("--compile-backend", default="inductor")
    args = parser.parse_args(argv)
    cpu = args.check_cpu
    defaults = dict(dim=32 if cpu else 512, batches="64,128" if cpu else "65536,131072,262144,1048576",
                    tile=16 if cpu else 8192, warm_batch=32 if cpu else 65536, gemm=256 if cpu else 8192,
                    check_batch=37 if cpu else 4099, step_batch=64 if cpu else 65536, repeats=2 if cpu else 3)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {','.join(METHODS)}")
    args.device = "cpu" if cpu else "cuda"
    return args


# -- the compared losses: each (q, k, scale) -> scalar, the symmetric InfoNCE mean -----------------------------------

def mmcore_loss(tile: int, kernel: str):
    import mmcore

    def loss(q, k, scale):
        rows, columns = mmcore.info_nce_pair_rows(q, k, scale, tile_size=tile, kernel=kernel)
        return (rows.float().mean() + columns.float().mean()) / 2

    return loss


def _block_merge(q_rows, k_cols, scale, row_lse, col_lse):
    """One block of the sketch: its ``[t, t]`` logits (product in the inputs' dtype, fp32 after) merged into the
    running row (``[t]``) and column (``[t]``) log-sum-exps."""
    import torch

    logits = (q_rows @ k_cols.T).float() * scale
    return (torch.logaddexp(row_lse, torch.logsumexp(logits, 1)),
            torch.logaddexp(col_lse, torch.logsumexp(logits, 0)))


def compiled_tiles_loss(tile: int, backend: str):
    """The ``compile`` sketch: a Python loop over blocks, each block ``torch.compile``'d and checkpointed (the
    backward recomputes its logits; saved per block: two ``[t]`` vectors)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    block = torch.compile(_block_merge, dynamic=False, backend=backend)

    def loss(q, k, scale):
        starts = range(0, q.shape[0], tile)
        empty = [torch.full((min(tile, q.shape[0] - s),), float("-inf"), device=q.device) for s in starts]
        rows, cols = list(empty), [e.clone() for e in empty]
        for i, si in enumerate(starts):
            for j, sj in enumerate(starts):
                rows[i], cols[j] = checkpoint(block, q[si:si + tile], k[sj:sj + tile], scale, rows[i], cols[j],
                                              use_reentrant=False)
        positive = scale * (q * k).sum(1)
        return ((torch.cat(rows) - positive).mean() + (torch.cat(cols) - positive).mean()) / 2

    return loss


def infcl_loss(dim: int):
    """inf-cl's ``cal_inf_loss`` both ways. The scale multiplies the queries here (its own ``scale`` argument
    all-reduces its gradient, which needs torch.distributed); heads of ``gcd(d, 256)`` dimensions (its limit)."""
    from inf_cl import cal_inf_loss

    head = math.gcd(dim, 256)

    def loss(q, k, scale):
        return (cal_inf_loss(scale * q, k, head_dim=head) + cal_inf_loss(scale * k, q, head_dim=head)) / 2

    return loss


def make_loss(method: str, args):
    if method == "plain":
        return mmcore_loss(0, "torch")
    if method in ("torch", "triton"):
        return mmcore_loss(args.tile, method)
    if method == "compile":
        return compiled_tiles_loss(args.tile, args.compile_backend)
    return infcl_loss(args.dim)


def skip_reason(method: str, args):
    """Why ``method`` cannot run here, or None."""
    if method != "infcl":
        return None
    import importlib.util

    if importlib.util.find_spec("inf_cl") is None:
        return "inf-cl not installed: pip install inf-cl"
    if args.device != "cuda":
        return "inf-cl needs CUDA"
    if math.gcd(args.dim, 256) < 16:
        return f"inf-cl needs d divisible by 16, got {args.dim}"
    return None


# -- measuring --------------------------------------------------------------------------------------------------------

def unit_rows(batch: int, dim: int, dtype, device: str, seed: int):
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(batch, dim, device=device, generator=gen)
    return torch.nn.functional.normalize(x, dim=1).to(dtype).requires_grad_(True)


def loss_inputs(batch: int, args, dtype):
    import torch

    q = unit_rows(batch, args.dim, dtype, args.device, 0)
    k = unit_rows(batch, args.dim, dtype, args.device, 1)
    scale = torch.tensor(2.6, device=args.device).exp().requires_grad_(True)
    return q, k, scale


def loss_step(loss, inputs):
    def step():
        for t in inputs:
            t.grad = None
        loss(*inputs).backward()

    return step


def free_memory(args) -> None:
    gc.collect()
    if args.device == "cuda":
        import torch

        torch.cuda.empty_cache()


def timed(step, args) -> dict:
    """``{"seconds": fastest step, "peak_bytes", "steps"}``: up to ``--repeats`` steps (at least two unless the
    first alone exceeds ``--budget``), peak allocation over them minus the allocation before them."""
    import torch

    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    while len(times) < max(args.repeats, 1):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
        if sum(times) > args.budget and (len(times) >= 2 or times[0] > args.budget):
            break
    peak = torch.cuda.max_memory_allocated() - base if cuda else float("nan")
    return {"seconds": min(times), "peak_bytes": peak, "steps": len(times)}


def guarded(run, args) -> dict:
    """``run()``'s result, ``{"error": "does not fit"}`` when CUDA runs out of memory, ``{"error": ...}`` (and the
    traceback on stderr) for any other failure: one failing cell does not end the run."""
    import torch

    result = None
    try:
        result = run()
    except torch.cuda.OutOfMemoryError:
        result = {"error": "does not fit"}
    except Exception as exc:  # a compile failure of one method must not hide the others' figures
        traceback.print_exc(file=sys.stderr)
        result = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"}
    free_memory(args)
    return result


def gemm_rate(args, dtype) -> float:
    """FLOP/s of ``n x n x n`` products in ``dtype`` (``2 n^3`` each): 3 untimed, then 10 timed."""
    import torch

    n = args.gemm
    a = torch.randn(n, n, device=args.device).to(dtype)
    b = torch.randn(n, n, device=args.device).to(dtype)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    sync()
    rate = 2 * n ** 3 * 10 / (time.perf_counter() - start)
    del a, b
    free_memory(args)
    return rate


# -- the correctness check: fused vs PyTorch tiles vs float64 ------------------------------------------------------

def float64_pair_lse(q, k, scale, labels, valid):
    """The contract in float64: row / column log-sum-exps of ``scale q k^T`` with excluded entries at
    MASKED_LOGIT (row softmaxes exclude invalid columns, column softmaxes invalid rows, labels both ways)."""
    import torch

    from mmcore.contrastive import MASKED_LOGIT

    logits = scale * (q @ k.T)
    same = torch.ones_like(logits, dtype=torch.bool)
    if labels is not None:
        same = labels[:, None] == labels[None, :]
    row_ok, col_ok = same, same
    if valid is not None:
        row_ok, col_ok = same & valid[None, :], same & valid[:, None]
    masked = torch.tensor(MASKED_LOGIT, dtype=logits.dtype, device=logits.device)
    return (torch.where(row_ok, logits, masked).logsumexp(1), torch.where(col_ok, logits, masked).logsumexp(0))


def check_fused(args, dtype) -> list:
    """Rows ``(case, quantity, fused vs tiles, fused vs fp64, tiles vs fp64, ok)``: values and gradients of
    ``sum(w_r * rows + w_c * columns)`` (fixed random weights) at ``--check-batch`` rows."""
    import torch

    from mmcore.contrastive.kernels import use_fused
    from mmcore.contrastive.tiled import tiled_pair_logsumexp

    out = []
    n = args.check_batch
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    for case in ("unmasked", "labels+valid"):
        gen = torch.Generator(device=args.device).manual_seed(n)
        q, k = unit_rows(n, args.dim, dtype, args.device, 2), unit_rows(n, args.dim, dtype, args.device, 3)
        scale = torch.tensor(12.0, device=args.device, requires_grad=True)
        labels = valid = None
        if case != "unmasked":
            labels = torch.randint(0, 3, (n,), device=args.device, generator=gen)
            valid = torch.rand(n, device=args.device, generator=gen) > 0.25
        weights = [torch.randn(n, device=args.device, generator=gen) for _ in range(2)]
        if not use_fused("triton", q):
            out.append((case, "fused kernels not used for this tensor", "", "", "", False))
            continue

        def values_and_grads(outputs, inputs):
            total = sum((o.double() * w.double()).sum() for o, w in zip(outputs, weights))
            return [o.detach().double() for o in outputs] + [g.double() for g in torch.autograd.grad(total, inputs)]

        tile = max(16, min(args.tile, 1024))
        fused = values_and_grads(tiled_pair_logsumexp(q, k, scale, labels, valid, tile=tile, kernel="triton"),
                                 (q, k, scale))
        tiles = values_and_grads(tiled_pair_logsumexp(q, k, scale, labels, valid, tile=tile), (q, k, scale))
        q64, k64 = q.detach().double().requires_grad_(), k.detach().double().requires_grad_()
        s64 = scale.detach().double().requires_grad_()
        exact = values_and_grads(float64_pair_lse(q64, k64, s64, labels, valid), (q64, k64, s64))
        for name, f, t, e in zip(("row lse", "column lse", "dq", "dk", "dscale"), fused, tiles, exact):
            magnitude = max(e.abs().max().item(), 1e-30)

            def rel(a, b):
                return (a - b).abs().max().item() / magnitude

            ok = rel(f, e) <= max(2 * rel(t, e), tolerance)
            out.append((case, name, rel(f, t), rel(f, e), rel(t, e), ok))
    return out


# -- the training step -----------------------------------------------------------------------------------------------

def build_step(mode: str, args, dtype):
    """One AdamW step of a BindingModule (two mlp towers, pairwise, infonce in ``mode``) on ``--step-batch``
    random feature rows, as a function."""
    import torch

    import mmcore
    import mmcore.testing

    tile, kernel = STEP_MODES[mode]
    features = 16 if args.check_cpu else 768
    raw = mmcore.testing.tiny_recipe(
        embed_dim=args.dim, anchor={"name": "pairwise"},
        loss={"name": "infonce", "tile_size": args.tile if tile is None else tile, "kernel": kernel},
        evaluators=[], trainer={"batch_size": 64})
    raw["dataset"]["modalities"] = {m: {"input_dim": features} for m in ("image", "text")}
    raw["encoders"] = {m: {"name": "mlp", "hidden": [32 if args.check_cpu else 1024]} for m in ("image", "text")}
    module, _ = mmcore.testing.module_and_batch(raw)
    module = module.to(args.device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    gen = torch.Generator(device=args.device).manual_seed(0)
    size = args.step_batch
    batch = mmcore.Batch(
        inputs={m: torch.randn(size, features, device=args.device, generator=gen) for m in ("image", "text")},
        present={m: torch.ones(size, dtype=torch.bool, device=args.device) for m in ("image", "text")})
    autocast = dtype != torch.float32
    with torch.no_grad(), torch.autocast(args.device, dtype=dtype, enabled=autocast):
        reaches_loss = str(next(iter(module.embed(batch).values())).dtype).replace("torch.", "")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=dtype, enabled=autocast):
            losses, finish = module.step_losses(batch, 0)
            total = torch.stack(list(losses.values())).sum()
        finish(total).backward()
        optimizer.step()

    step.reaches_loss = reaches_loss  # the embeddings' dtype as the loss gets them
    return step


# -- the report ------------------------------------------------------------------------------------------------------

def fmt_batch(b: int) -> str:
    return f"{b:,}"


def loss_row(method, batch, r, plain, tiles, gemm, args) -> str:
    if "error" in r:
        return f"| {LABELS[method]} | {fmt_batch(batch)} | {r['error']} | | | | |"
    share = 8 * batch ** 2 * args.dim / r["seconds"] / gemm * 100
    x_plain = f"{r['seconds'] / plain['seconds']:.2f}" if plain and "error" not in plain else ""
    x_tiles = f"{r['seconds'] / tiles['seconds']:.2f}" if tiles and "error" not in tiles else ""
    peak = f"{r['peak_bytes'] / GIB:.2f}" if r["peak_bytes"] == r["peak_bytes"] else "-"
    return (f"| {LABELS[method]} | {fmt_batch(batch)} | {r['seconds']:.4f} ({r['steps']}) | {peak} | {share:.1f} | "
            f"{x_plain} | {x_tiles} |")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.check_cpu:
        from mmcore.testing import interpret_triton

        interpret_triton()  # before mmcore.contrastive.fused is imported
    import torch
    import triton

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU, or --check-cpu for the code path at tiny sizes")
        return 2
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({platform.machine()})"
    print(f"# fused InfoNCE benchmark: {device_name}, torch {torch.__version__}, triton {triton.__version__}, "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"d = {args.dim}, {args.dtype}, tile {args.tile}, methods {','.join(args.methods)}, repeats {args.repeats}, "
          f"budget {args.budget:g} s" + (", TRITON_INTERPRET=1" if args.check_cpu else ""), flush=True)

    gemm = gemm_rate(args, dtype)
    print(f"\nreference: {args.gemm}^3 {args.dtype} GEMM: {gemm / 1e12:.2f} TFLOP/s", flush=True)

    print(f"\n## symmetric InfoNCE, forward + backward, d = {args.dim}, {args.dtype}\n")
    print("| method | B | s per step (steps) | peak GiB | % of GEMM rate (8 B^2 d) | x plain | x PyTorch tiles |")
    print("|---|---|---|---|---|---|---|", flush=True)
    results = {}
    plain_limit = None
    for method in args.methods:
        reason = skip_reason(method, args)
        if reason:
            print(f"| {LABELS[method]} | | {reason} | | | | |", flush=True)
    for batch in args.batches:
        inputs = loss_inputs(batch, args, dtype)
        for method in args.methods:
            if skip_reason(method, args):
                continue
            if method == "plain" and plain_limit is not None and batch > plain_limit:
                r = {"error": f"not run: B = {plain_limit:,} did not fit"}
            else:
                def run():
                    loss = make_loss(method, args)
                    warm = loss_inputs(min(batch, args.warm_batch), args, dtype)
                    loss_step(loss, warm)()
                    del warm
                    free_memory(args)
                    return timed(loss_step(loss, inputs), args)

                r = guarded(run, args)
                for t in inputs:
                    t.grad = None
                free_memory(args)
                if method == "plain" and r.get("error") == "does not fit":
                    plain_limit = batch
            results[method, batch] = r
            print(loss_row(method, batch, r, results.get(("plain", batch)), results.get(("torch", batch)), gemm,
                           args), flush=True)
        inputs = None  # this B's q and k, freed before the next B's
        free_memory(args)

    print(f"\n## correctness at B = {args.check_batch:,} (fused kernels vs PyTorch tiles vs float64; "
          "max |difference| / max |float64|)\n")
    print("| case | quantity | fused vs tiles | fused vs fp64 | tiles vs fp64 | ok |\n|---|---|---|---|---|---|")
    checks = guarded(lambda: {"rows": check_fused(args, dtype)}, args)
    check_ok = "error" not in checks
    for case, name, ft, fe, te, ok in checks.get("rows", [(("check", checks.get("error"), "", "", "", False))]):
        cells = [f"{x:.2e}" if isinstance(x, float) else str(x) for x in (ft, fe, te)]
        print(f"| {case} | {name} | {' | '.join(cells)} | {'yes' if ok else 'NO'} |")
        check_ok = check_ok and ok
    sys.stdout.flush()

    if args.step_batch:
        print(f"\n## mmcore training step, MLP heads, B = {args.step_batch:,} (AdamW, pairwise infonce, "
              f"{'autocast ' if dtype != torch.float32 else ''}{args.dtype})\n")
        print("| loss | embeddings | s per step (steps) | peak GiB | x plain |\n|---|---|---|---|---|", flush=True)
        plain = None
        for mode in STEP_MODES:
            def run():
                step = build_step(mode, args, dtype)
                step()  # untimed: compilation, optimizer state
                return dict(timed(step, args), reaches_loss=step.reaches_loss)

            r = guarded(run, args)
            if mode == "plain":
                plain = r
            if "error" in r:
                print(f"| {LABELS[mode]} | | {r['error']} | | |", flush=True)
                continue
            peak = f"{r['peak_bytes'] / GIB:.2f}" if r["peak_bytes"] == r["peak_bytes"] else "-"
            x = f"{r['seconds'] / plain['seconds']:.2f}" if plain and "error" not in plain else ""
            print(f"| {LABELS[mode]} | {r['reaches_loss']} | {r['seconds']:.4f} ({r['steps']}) | {peak} | {x} |",
                  flush=True)

    print("\n## against the issue's targets\n")
    fitting = [b for b in args.batches if "error" not in results.get(("plain", b), {"error": ""})]
    fused = {b: results.get(("triton", b)) for b in args.batches}
    if fitting and all(fused[b] and "error" not in fused[b] for b in fitting[-1:]):
        b = fitting[-1]
        ratio = fused[b]["seconds"] / results["plain", b]["seconds"]
        print(f"- fused / plain at B = {b:,}, the largest B the plain loss fits: {ratio:.2f}x "
              f"(target <= 1.1x: {'met' if ratio <= 1.1 else 'not met'})")
    else:
        print("- fused / plain: no B where both ran")
    for b in (262144, 1048576):
        r = fused.get(b)
        if not r or "error" in r:
            print(f"- B = {b:,}: fused {'not run' if not r else r['error']}")
            continue
        share = 8 * b ** 2 * args.dim / r["seconds"] / gemm * 100
        met = share >= 75 and r["peak_bytes"] < 10 * GIB
        print(f"- B = {b:,}: fused at {share:.1f}% of the GEMM rate, {r['peak_bytes'] / GIB:.2f} GiB "
              f"(target >= 75% with < 10 GiB: {'met' if met else 'not met'})")
    print(f"- correctness check: {'passed' if check_ok else 'FAILED'}")
    return 0 if check_ok else 1


if __name__ == "__main__":
    sys.exit(main())
