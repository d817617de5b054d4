"""The fused Triton kernels (mmcore.contrastive.fused) in Triton's interpreter against the PyTorch tiles and the
plain loss: values and gradients, fp32 and bf16, with labels, invalid rows and sizes no block divides.

Run as a script (it switches Triton's interpreter on before mmcore.contrastive.fused is imported):
``python tests/fused_check.py`` prints one JSON line, case -> {"diff", "scale"} (largest absolute
difference and largest reference magnitude over the values and every gradient). Used by test_fused_kernels.py.
"""

import json
import sys

import torch

from mmcore.testing import interpret_triton

interpret_triton()  # before mmcore.contrastive.fused is imported (by the calls below)

from mmcore.contrastive.infonce import info_nce_pair_rows, info_nce_rows  # noqa: E402
from mmcore.contrastive.tiled import tiled_logsumexp, tiled_pair_logsumexp  # noqa: E402


def unit(rows, dim, gen, dtype):
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=gen), dim=1).to(dtype).requires_grad_()


def compare(reference, fused, inputs, rows=None):
    """Largest difference of outputs and of d(sum of outputs * fixed weights)/d inputs, on the rows ``rows`` (a
    ``[n]`` bool; all rows when None: a loss row whose own positive is invalid has no meaning)."""
    gen = torch.Generator().manual_seed(5)
    weights = [torch.randn(o.shape, generator=gen) for o in reference]
    if rows is not None:
        reference, fused = [o[rows] for o in reference], [o[rows] for o in fused]
        weights = [w[rows] for w in weights]
    grads = []
    for outputs in (reference, fused):
        total = sum((o.float() * w).sum() for o, w in zip(outputs, weights))
        grads.append(torch.autograd.grad(total, inputs))
    pairs = list(zip(reference, fused)) + list(zip(*grads))
    return {"diff": max((a.float() - b.float()).abs().max().item() for a, b in pairs),
            "scale": max(a.float().abs().max().item() for a, _ in pairs)}


def masks(kind, rows, gen):
    labels = torch.randint(0, 3, (rows,), generator=gen) if "labels" in kind else None
    valid = (torch.rand(rows, generator=gen) > 0.25) if "valid" in kind else None
    return labels, valid


def main():
    report = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).split(".")[-1]
        # 37: no block of 16 divides it; 40: three chunks of d (bf16 at one size: the interpreter is slow)
        for rows, dim in ((37, 20), (48, 40)) if dtype == torch.float32 else ((37, 40),):
            for kind in ("plain", "labels", "valid", "labels+valid"):
                gen = torch.Generator().manual_seed(rows + dim)
                q, k = unit(rows, dim, gen, dtype), unit(rows, dim, gen, dtype)
                scale = torch.tensor(12.0, requires_grad=True)
                labels, valid = masks(kind, rows, gen)
                report[f"pair/{name}/{rows}x{dim}/{kind}"] = compare(
                    tiled_pair_logsumexp(q, k, scale, labels, valid, tile=8),
                    tiled_pair_logsumexp(q, k, scale, labels, valid, tile=8, kernel="triton"), (q, k, scale))
                # a candidate pool of another size, positives anywhere in it (the DDP path: gathered candidates)
                c = unit(rows + 13, dim, gen, dtype)
                targets = torch.randint(0, rows + 13, (rows,), generator=gen)
                pool_labels, pool_valid = masks(kind, rows + 13, gen)
                report[f"rows/{name}/{rows}x{dim}/{kind}"] = compare(
                    (tiled_logsumexp(q, c, scale, targets, pool_labels, pool_valid, tile=8),),
                    (tiled_logsumexp(q, c, scale, targets, pool_labels, pool_valid, tile=8, kernel="triton"),),
                    (q, c, scale))
    # the whole loss against the plain (untiled) one: InfoNCE both directions, MAMCL's unmasked reverse
    gen = torch.Generator().manual_seed(0)
    q, k = unit(29, 24, gen, torch.float32), unit(29, 24, gen, torch.float32)
    scale = torch.tensor(1 / 0.07, requires_grad=True)
    labels, valid = masks("labels+valid", 29, gen)
    for reverse_masked in (True, False):
        report[f"loss/infonce-pair/mask_reverse={reverse_masked}"] = compare(
            info_nce_pair_rows(q, k, scale, labels, valid, reverse_masked),
            info_nce_pair_rows(q, k, scale, labels, valid, reverse_masked, tile_size=8, kernel="triton"), (q, k, scale),
            valid)
    targets = torch.arange(29)
    report["loss/infonce-rows"] = compare(
        (info_nce_rows(q, k, targets, scale, labels, valid),),
        (info_nce_rows(q, k, targets, scale, labels, valid, tile_size=8, kernel="triton"),), (q, k, scale), valid)
    # a row whose every candidate is excluded stays finite (the padding rows of a sparse batch)
    lonely = torch.zeros(29, dtype=torch.bool)
    lonely[:3] = True
    out = info_nce_pair_rows(q, k, scale, None, lonely, tile_size=8, kernel="triton")
    total = sum(o.sum() for o in out)
    grads = torch.autograd.grad(total, (q, k, scale))
    report["finite with 26 of 29 rows invalid"] = {
        "diff": 0.0 if all(torch.isfinite(t).all() for t in (*out, *grads)) else float("inf"), "scale": 1.0}
    print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
