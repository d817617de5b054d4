"""What the per-step speed work of issue 17 changed, each shown to compute what it replaced: the objective's
unmasked path, a term's weight of 1, the optimizer's fused kernel, and no NVML probe per optimizer step on a CPU
run. (Speed itself is measured in benchmarks/small_runs.py, never here.)"""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
import torch.nn.functional as F

import mmcore.train.objective as objective
from mmcore import AlignmentTerm
from mmcore.builtins.losses import InfoNCEConfig, build_infonce
from mmcore.testing import run_recipe, tiny_recipe
from mmcore.train.callbacks import NVML_CHECK


def _term(mask, seed=0):
    generator = torch.Generator().manual_seed(seed)
    query = F.normalize(torch.randn(12, 8, generator=generator), dim=1).requires_grad_()
    key = F.normalize(torch.randn(12, 8, generator=generator), dim=1).requires_grad_()
    return AlignmentTerm("text-image", query, key, mask)


def _loss_and_grads(term, masked: bool, monkeypatch):
    loss = build_infonce(InfoNCEConfig(learnable=False), None)
    if masked:
        monkeypatch.setattr(objective, "every_row_known", lambda mask: False)
    value = objective.term_loss(loss, term)
    monkeypatch.undo()
    query_grad, key_grad = torch.autograd.grad(value, (term.query, term.key))
    return value.detach(), query_grad, key_grad


def test_the_unmasked_path_computes_the_masked_mean_to_the_bit(monkeypatch):
    """Every row present (on the CPU): the objective skips the masking and gives the same value and gradients,
    bit for bit, as the masked computation it replaces."""
    term = _term(torch.ones(12, dtype=torch.bool))
    assert objective.every_row_known(term.mask)
    fast = _loss_and_grads(term, masked=False, monkeypatch=monkeypatch)
    masked = _loss_and_grads(term, masked=True, monkeypatch=monkeypatch)
    for a, b in zip(fast, masked):
        assert torch.equal(a, b)


def test_a_mask_with_an_absent_row_takes_the_masked_path(monkeypatch):
    """One row out: not every row is known to be present, and the value is the mean over the 11 others."""
    mask = torch.ones(12, dtype=torch.bool)
    mask[3] = False
    term = _term(mask, seed=1)
    assert not objective.every_row_known(mask)
    value, _, _ = _loss_and_grads(term, masked=False, monkeypatch=monkeypatch)
    everything, _, _ = _loss_and_grads(_term(torch.ones(12, dtype=torch.bool), seed=1), masked=False,
                                       monkeypatch=monkeypatch)
    assert value.item() != pytest.approx(everything.item(), abs=1e-6)


def test_a_weight_of_one_returns_the_term_itself_and_other_weights_scale_it():
    from mmcore.train.module import _weighted

    value = torch.tensor(2.5, requires_grad=True)
    assert _weighted(1.0, value) is value
    assert _weighted(1, value) is value
    assert _weighted(0.25, value).item() == 0.625


class _Seen(L.Callback):
    """What the NVML switch was at each training step, and the optimizer Lightning stepped."""

    def __init__(self):
        self.during, self.optimizer = set(), None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.during.add(os.environ.get(NVML_CHECK))
        self.optimizer = trainer.optimizers[0]


def test_a_cpu_run_trains_without_the_nvml_probe_and_gives_it_back(tmp_path):
    """Lightning's import sets the NVML-based CUDA check; a CPU run trains without it (torch then caches its CUDA
    answer rather than loading NVML at every optimizer step) and sets it back when training ends."""
    assert os.environ.get(NVML_CHECK) == "1"  # set by importing Lightning
    seen = _Seen()
    run_recipe(tiny_recipe(), tmp_path / "run", callbacks=(seen,))
    assert seen.during == {None}
    assert os.environ.get(NVML_CHECK) == "1"


def test_the_fused_optimizer_is_the_recipes_choice_and_trains_like_foreach(tmp_path):
    """``optimizer.implementation = "fused"`` gives torch's fused AdamW; it trains to the default's metrics up to
    float rounding (a different kernel, the same update)."""
    seen = _Seen()
    fused = run_recipe(tiny_recipe(optimizer={"implementation": "fused"}), tmp_path / "fused", callbacks=(seen,))
    assert seen.optimizer.defaults["fused"] is True and not seen.optimizer.defaults["foreach"]
    seen_default = _Seen()
    default = run_recipe(tiny_recipe(), tmp_path / "foreach", callbacks=(seen_default,))
    assert seen_default.optimizer.defaults["foreach"] is True and not seen_default.optimizer.defaults["fused"]
    assert fused["retrieval/trained/R@1"] == pytest.approx(default["retrieval/trained/R@1"], abs=0.05)
    assert fused["retrieval/trained/R@1"] > 5 / fused["samples"]  # it learns: 5x chance
