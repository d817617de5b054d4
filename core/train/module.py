"""The LightningModule: encoders per modality, an anchor strategy and a loss trained as one module, with the
non-finite loss guard and the optimizer set-up."""

from __future__ import annotations

from pathlib import Path

import attrs
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..contracts import Batch, EmbeddedSplit, select_rows
from ..recipe import Recipe
from torch.utils.data import default_collate

from .cached import backward_through_encoders, embed_without_graph
from .grad_checkpointing import enable as enable_grad_checkpointing
from .data import accepts_train, present_index
from .objective import term_loss


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or infinite (``trainer.on_nonfinite = "stop"``)."""


def _weighted(weight: float, value: torch.Tensor) -> torch.Tensor:
    """``weight * value``; a weight of 1 returns ``value`` itself (the same number, one operation fewer a term)."""
    return value if isinstance(weight, (int, float)) and weight == 1 else weight * value


class BindingModule(L.LightningModule):
    """Encoders per modality, an anchor strategy and a loss, trained as one LightningModule.

    Every learnable thing (encoders, the loss's temperature, the strategy's own parameters) is a submodule, so it is
    optimised and checkpointed.
    """

    def __init__(self, recipe: Recipe, encoders: dict, loss: nn.Module, evaluators: list, observed_pairs: frozenset,
                 class_names: tuple = (), inputs: dict | None = None, prompts: tuple = ()):
        super().__init__()
        self.prompts = tuple(prompts)  # zero-shot prompt templates of the dataset
        self.inputs = dict(inputs or {})  # modality -> InputSpec
        self.recipe = recipe
        self.encoders = nn.ModuleDict(encoders)
        self.loss = loss
        self.strategy: nn.Module | None = None
        self.evaluators = evaluators
        self.observed_pairs = observed_pairs
        self.class_names = class_names
        self.test_metrics: dict = {}
        self.embed_only = False  # the test loop embeds its split without running the evaluators
        self.skipped_batches = 0
        self.skipped_samples = 0  # media cells the dataset dropped as undecodable (on_bad_media = "skip")
        self.source_names: tuple = ()  # a mixture's sources (DatasetSplits.source_names): train/samples/<source>
        self.samples_per_source = None  # [sources] long: this rank's training rows from each source so far
        self._pending_checks: list = []  # (host flags, CUDA event, term names, step, epoch), oldest first
        self._collected: dict = {}
        self.grad_checkpointing: dict = {}  # modality -> how its activations are checkpointed
        for modality, section in recipe.encoders.items():
            if section.frozen:
                self.encoders[modality].requires_grad_(False)
            if section.grad_checkpointing:
                self.grad_checkpointing[modality] = enable_grad_checkpointing(self.encoders[modality])

    # -- the math -----------------------------------------------------------------------------------------

    def collators(self) -> dict:
        """modality -> ``(preprocess, collate)`` of its encoder (None where it has none), for the data module."""
        return {m: (getattr(e, "preprocess", None), getattr(e, "collate", None)) for m, e in self.encoders.items()}

    @staticmethod
    def present_rows(present: torch.Tensor, rows=None):
        """Indices ``[k]`` of the present rows, or None when every row is present. ``rows``: what
        :func:`~mmcore.train.data.present_index` already computed on the host for this batch, if it did."""
        rows = present_index(present) if rows is None else rows
        return None if isinstance(rows, str) else rows

    def encode_present(self, modality: str, inputs, index) -> torch.Tensor:
        """The encoder's raw output ``[k, d]`` on the present rows ``index`` only (None: every row).

        ``inputs`` is None for a raw-media modality that no row of the batch has: the encoder is not run."""
        if inputs is None:
            return torch.zeros((0, self.recipe.embed_dim), device=self.device)
        return self.encoders[modality](inputs if index is None else select_rows(inputs, index))

    @torch.no_grad()
    def encode_raw(self, modality: str, items: list) -> torch.Tensor:
        """``[len(items), d]`` normalised embeddings of raw items (paths, images, waveforms, strings) through the
        encoder's eval preprocessing (``preprocess(raw, train=False)``), its collate and its forward."""
        encoder = self.encoders[modality]
        preprocess = getattr(encoder, "preprocess", None)
        if preprocess is None:
            raise ValueError(f"{modality}: its encoder takes tensors, not raw items")
        with_train = accepts_train(preprocess)
        values = [preprocess(item, train=False) if with_train else preprocess(item) for item in items]
        batch = (getattr(encoder, "collate", None) or default_collate)(values)
        batch = {k: v.to(self.device) for k, v in batch.items()} if isinstance(batch, dict) else batch.to(self.device)
        return F.normalize(encoder(batch).float(), dim=-1)

    @staticmethod
    def scatter_present(out: torch.Tensor, size: int, index) -> torch.Tensor:
        """``[size, d]``: the normalised ``[k, d]`` output at rows ``index`` (None: every row), zeros elsewhere."""
        out = F.normalize(out, dim=-1)
        if index is None:
            return out
        return out.new_zeros((size, out.shape[1])).index_copy(0, index, out)

    def embed(self, batch: Batch, chunk: int = 0) -> dict:
        """``{m: [B, d]}`` L2-normalised embeddings; rows of absent samples are zeros (their encoder never ran).
        ``chunk > 0``: each encoder runs on at most ``chunk`` rows at a time (:meth:`embed_cached`)."""
        if chunk:
            return self.embeddings_of(self.embed_cached(batch, chunk), batch)
        rows = batch.rows or {}
        z = {}
        for m in self.encoders:
            index = self.present_rows(batch.present[m], rows.get(m))
            z[m] = self.scatter_present(self.encode_present(m, batch.inputs[m], index), batch.size, index)
        return z

    def embed_cached(self, batch: Batch, chunk: int) -> dict:
        """``{m: EncoderCache}``: each encoder's raw outputs on its present rows, ``chunk`` rows per call, without a
        graph (:func:`mmcore.train.cached.embed_without_graph`). Raw-media modalities no row has are left out."""
        rows = batch.rows or {}
        caches = {}
        for m, encoder in self.encoders.items():
            index = self.present_rows(batch.present[m], rows.get(m))
            count = batch.size if index is None else int(index.numel())
            if batch.inputs[m] is not None:  # None: raw media no row of the batch has (the encoder is not run)
                caches[m] = embed_without_graph(encoder, batch.inputs[m], index, count, chunk, self.device)
        return caches

    def embeddings_of(self, caches: dict, batch: Batch) -> dict:
        """``{m: [B, d]}`` as :meth:`embed` returns them, from :meth:`embed_cached`'s outputs."""
        z = {}
        for m in self.encoders:
            if m in caches:
                z[m] = self.scatter_present(caches[m].raw, batch.size, caches[m].index)
            else:
                z[m] = torch.zeros((batch.size, self.recipe.embed_dim), device=self.device)
        return z

    def align(self, z: dict, batch: Batch) -> dict:
        """All weighted loss terms of the embeddings ``z`` of a batch: ``{term name: scalar}`` (their sum is what is
        minimised). Each term contributes ``term.weight * term_loss(loss, term)``; aux losses are added as
        returned."""
        alignment = self.strategy(z, batch.present, batch)
        losses = {term.name: _weighted(term.weight, term_loss(self.loss, term)) for term in alignment.terms}
        for name, value in alignment.aux_losses.items():
            if name in losses:
                raise ValueError(f"the anchor strategy returned a term and an aux loss both named {name!r}")
            losses[name] = value
        return losses

    def objective(self, batch: Batch) -> dict:
        """:meth:`align` of the batch's embeddings, each encoder run once on all its present rows."""
        return self.align(self.embed(batch), batch)

    def step_losses(self, batch: Batch, chunk: int = 0) -> tuple:
        """``(losses, finish)``: the batch's :meth:`align` losses, and ``finish(total) -> tensor to back-propagate``.

        ``chunk = 0``: the plain step (each encoder runs once, with its graph); ``finish`` returns ``total``.
        ``chunk > 0``: the cached step (:mod:`mmcore.train.cached`): the encoders run ``chunk`` rows at a time
        without a graph; ``finish`` back-propagates all chunks but each encoder's last and returns the surrogate
        loss whose backward completes the whole batch's gradient. Call ``finish`` at most once."""
        if not chunk:
            return self.objective(batch), lambda total: total
        caches = self.embed_cached(batch, chunk)

        def finish(total):
            return backward_through_encoders(total, dict(self.encoders), batch.inputs, caches, self.own_parameters(),
                                             self.device)

        return self.align(self.embeddings_of(caches, batch), batch), finish

    def own_parameters(self) -> list:
        """The trainable parameters outside the encoders (the strategy's, the loss's temperatures)."""
        encoders = {id(p) for p in self.encoders.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in encoders]

    # -- Lightning hooks ----------------------------------------------------------------------------------

    def _step(self, data: dict, stage: str) -> torch.Tensor | None:
        """The step's loss (logged); in training with ``trainer.embed_chunk``, the cached step's surrogate loss
        (:mod:`mmcore.train.cached`), after its encoders' chunks but the last have been back-propagated."""
        batch = Batch.from_collated(data)
        losses, finish = self.step_losses(batch, self.recipe.trainer.embed_chunk)
        if stage == "train" and not self._check_finite(losses):
            return None
        total = torch.stack(list(losses.values())).sum()
        if stage == "train":
            self._log_train_step(losses, total, batch.size)
            return finish(total)
        self.log_dict({f"{stage}/loss/{k}": v.detach() for k, v in losses.items()}, on_epoch=True,
                      batch_size=batch.size, sync_dist=True)
        self.log(f"{stage}/loss", total.detach(), on_epoch=True, prog_bar=True, batch_size=batch.size, sync_dist=True)
        return total

    def logs_this_step(self) -> bool:
        """Whether the training step now running is one whose step-level values reach the loggers (every
        ``trainer.log_every_n_steps``-th, and the last): Lightning writes only those, so values logged on other
        steps would be stored and dropped, at about a millisecond each. True outside a Trainer."""
        connector = getattr(getattr(self, "_trainer", None), "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def _log_train_step(self, losses: dict, total: torch.Tensor, size: int) -> None:
        """The step-level scalars: ``train/loss`` (and on the progress bar), each term's ``train/loss/<term>``, the
        temperatures and ``train/lr``, on logging steps only (:meth:`logs_this_step`); between them only
        ``train/loss``, and only when a progress bar shows it. All are device tensors: no host sync."""
        shown = self._trainer is not None and self.trainer.progress_bar_callback is not None
        if not self.logs_this_step():
            if shown:
                self.log("train/loss", total.detach(), on_step=True, on_epoch=False, prog_bar=True, logger=False,
                         batch_size=size)
            return
        self.log("train/loss", total.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        scalars = {f"train/loss/{k}": v.detach() for k, v in losses.items()}
        if isinstance(getattr(self.loss, "logit_scale", None), torch.Tensor):
            scalars["train/temperature"] = 1.0 / self.loss.logit_scale.detach()
        for name, own in getattr(self.loss, "per_term", {}).items():
            scalars[f"train/temperature/{name}"] = 1.0 / own.logit_scale.detach()
        # a device tensor made by a fill kernel: logging the float would copy it host->device, a sync every step
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        scalars["train/lr"] = torch.full((), lr, device=total.device)
        self.log_dict(scalars, on_step=True, on_epoch=False, batch_size=size)

    def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
        """Lightning clears gradients between ``training_step`` and the backward; the cached step has already
        back-propagated most chunks by then, so it clears them itself when the step starts."""
        if not self.recipe.trainer.embed_chunk:
            optimizer.zero_grad()

    def _check_finite(self, losses: dict) -> bool:
        """False when this batch must be skipped; raises :class:`NonFiniteLoss` in ``"stop"`` mode.

        On a GPU in ``"stop"`` mode the host never waits for the device here: the values are copied to pinned
        memory asynchronously and judged once the GPU has passed them (a step or two later, and always before a
        checkpoint is written, so no checkpoint ever holds the result of a non-finite step). ``"skip"`` must
        decide before the update, so it synchronises every step.
        """
        values = torch.stack([v.detach().float() for v in losses.values()])
        if values.is_cuda and self.recipe.trainer.on_nonfinite == "stop":
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending_checks.append((host, event, tuple(losses), self.global_step, self.current_epoch))
            self.judge_pending_checks(wait=False)
            return True
        return self._judge(values.cpu(), tuple(losses), self.global_step, self.current_epoch)

    def judge_pending_checks(self, wait: bool) -> None:
        """Judge the deferred GPU checks in step order: those already computed, or all of them if ``wait``."""
        while self._pending_checks:
            host, event, names, step, epoch = self._pending_checks[0]
            if not wait and not event.query():
                return
            event.synchronize()
            self._pending_checks.pop(0)
            self._judge(host, names, step, epoch)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.judge_pending_checks(wait=True)
        checkpoint["mmcore_skipped_samples"] = self.skipped_samples
        if self.samples_per_source is not None:
            checkpoint["mmcore_samples_per_source"] = self.samples_per_source.tolist()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.skipped_samples = int(checkpoint.get("mmcore_skipped_samples", 0))  # counts go on across --resume
        if "mmcore_samples_per_source" in checkpoint:
            self.samples_per_source = torch.tensor(checkpoint["mmcore_samples_per_source"], device=self.device)

    def on_train_end(self) -> None:
        self.judge_pending_checks(wait=True)

    def _judge(self, values: torch.Tensor, names: tuple, step: int, epoch: int) -> bool:
        if bool(torch.isfinite(values).all()):
            return True
        bad = {name: value.item() for name, value in zip(names, values) if not torch.isfinite(value)}
        if self.recipe.trainer.on_nonfinite == "skip":
            self.skipped_batches += 1
            self.log("train/skipped_batches", float(self.skipped_batches), on_step=True, batch_size=1)
            return False
        self._pending_checks.clear()
        last = Path(self.trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        good = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
        terms = ", ".join(f"{name!r} = {value}" for name, value in bad.items())
        raise NonFiniteLoss(f"loss term {terms} at step {step} (epoch {epoch}); {good}. "
                            "Set trainer.on_nonfinite = \"skip\" to skip such batches instead.")

    def training_step(self, data, batch_idx):
        if self.recipe.trainer.embed_chunk:
            for optimizer in self.trainer.optimizers:
                optimizer.zero_grad()
        if data.get("skipped"):
            self.skipped_samples += int(data["skipped"])  # this rank's count; logged at each epoch's end
        if self.source_names and "source" in data:
            self._count_sources(data["source"])
        return self._step(data, "train")

    def _count_sources(self, source: torch.Tensor) -> None:
        """Add a batch's ``[B]`` source indices to :attr:`samples_per_source` (on the batch's device: no sync)."""
        counts = torch.bincount(source.long(), minlength=len(self.source_names))
        previous = self.samples_per_source
        self.samples_per_source = counts if previous is None else previous.to(counts.device) + counts

    def on_train_epoch_end(self):
        """``train/skipped_samples``: media cells the dataset dropped as undecodable so far, summed over ranks;
        only for data with raw media (nothing else skips, and the cross-rank sum costs every epoch).
        ``train/samples/<source>``: for a mixture, the training rows drawn from each source so far, summed over
        ranks (each rank's count goes on across ``--resume``, as the checkpoint holds it)."""
        if self.source_names and self.samples_per_source is not None:
            self.log_dict({f"train/samples/{name}": count.float() for name, count in
                           zip(self.source_names, self.samples_per_source)}, on_epoch=True, reduce_fx="sum",
                          sync_dist=True, batch_size=1)
        if not any(getattr(spec, "media", "") for spec in self.inputs.values()):
            return
        self.log("train/skipped_samples", float(self.skipped_samples), on_epoch=True, reduce_fx="sum",
                 sync_dist=True, batch_size=1)

    def validation_step(self, data, batch_idx):
        self._step(data, "val")

    def on_test_epoch_start(self):
        self._collected = {}

    def test_step(self, data, batch_idx, dataloader_idx: int = 0):
        batch = Batch.from_collated(data)
        z = self.embed(batch, self.recipe.trainer.embed_chunk)
        store = self._collected.setdefault(dataloader_idx, {"z": {}, "present": {}, "labels": [], "ids": []})
        for m in z:
            store["z"].setdefault(m, []).append(z[m].float())
            store["present"].setdefault(m, []).append(batch.present[m])
        if batch.labels is not None:
            store["labels"].append(batch.labels)
        store["ids"].append(batch.ids)

    def _embedded(self, store: dict) -> EmbeddedSplit:
        def merged(parts):
            local = torch.cat(parts)
            local = local.to(torch.uint8) if local.dtype == torch.bool else local
            return self.all_gather(local).reshape(-1, *local.shape[1:]).cpu().numpy()

        ids = merged(store["ids"])
        _, first = np.unique(ids, return_index=True)  # DistributedSampler pads with repeats: keep one of each
        first = np.sort(first)
        return EmbeddedSplit(
            z={m: merged(v)[first].astype(np.float32) for m, v in store["z"].items()},
            present={m: merged(v)[first].astype(bool) for m, v in store["present"].items()},
            labels=merged(store["labels"])[first] if store["labels"] else None,
            trained_pairs=self.trained_pairs,
            class_names=self.class_names,
            prompts=self.prompts,
            encode=self._encode_numpy,
        )

    def _encode_numpy(self, modality: str, items: list) -> np.ndarray:
        was_training = self.training
        self.eval()
        try:
            size = self.recipe.trainer.batch_size
            parts = [self.encode_raw(modality, list(items[i:i + size])) for i in range(0, len(items), size)]
        finally:
            self.train(was_training)
        return torch.cat(parts).cpu().numpy().astype(np.float32)

    @property
    def trained_pairs(self) -> frozenset:
        """The observed pairs the strategy aligns directly; every other pair is reported as emergent."""
        return frozenset(self.strategy.trained_pairs(self.observed_pairs))

    @property
    def summary_metrics(self) -> tuple:
        """The metric names the evaluators declare as summaries, in evaluator order."""
        return tuple(dict.fromkeys(k for e in self.evaluators for k in getattr(e, "summary_metrics", ())))

    def evaluate(self, split: EmbeddedSplit) -> dict:
        """``{"samples": n, **every evaluator's metrics}`` of an embedded split."""
        metrics = {"samples": float(len(next(iter(split.z.values()))))}
        for evaluate in self.evaluators:
            metrics.update(evaluate(split))
        return metrics

    def on_test_epoch_end(self):
        """The test split (loader 0) with its reference set (loader 1) embedded, gathered over ranks and, unless
        ``embed_only``, evaluated: ``self.test_split`` and ``self.test_metrics``."""
        split = self._embedded(self._collected[0])
        if 1 in self._collected:
            split = attrs.evolve(split, reference=self._embedded(self._collected[1]))
        self.test_split = split
        if self.embed_only:
            return
        self.test_metrics = metrics = self.evaluate(split)
        for key, value in metrics.items():
            self.log(f"test/{key}", value, rank_zero_only=True)

    def parameter_groups(self) -> list:
        """The optimizer's groups: each encoder with its own ``lr``/``weight_decay`` in groups of its own, the rest
        at the ``[optimizer]`` settings. Parameters with fewer than 2 dimensions (biases, norms, temperatures)
        get no weight decay (open_clip's rule). Empty groups are left out; frozen parameters are in none."""
        settings = self.recipe.optimizer
        own, groups = set(), []

        def add(params, lr, weight_decay, name):
            params = [p for p in params if p.requires_grad]
            for decay, chosen in ((weight_decay, [p for p in params if p.ndim >= 2]),
                                  (0.0, [p for p in params if p.ndim < 2])):
                if chosen:
                    groups.append({"params": chosen, "lr": lr, "weight_decay": decay, "name": name})

        for m, section in self.recipe.encoders.items():
            if section.lr is None and section.weight_decay is None:
                continue
            params = list(self.encoders[m].parameters())
            own.update(id(p) for p in params)
            add(params, settings.lr if section.lr is None else section.lr,
                settings.weight_decay if section.weight_decay is None else section.weight_decay, f"encoders.{m}")
        add([p for p in self.parameters() if id(p) not in own], settings.lr, settings.weight_decay, "default")
        return groups

    def configure_optimizers(self):
        settings = self.recipe.optimizer
        groups = self.parameter_groups()
        # foreach (the default): one kernel per operation over all tensors, the same numbers as the per-tensor loop
        # that torch picks on the CPU (each group of many small tensors paid ~10 Python-level ops per tensor);
        # fused: one kernel for the whole update (OptimizerSettings.implementation)
        kernel = {"fused": True} if settings.implementation == "fused" else {"foreach": True}
        if settings.name == "sgd":
            optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=0.9, **kernel)
        else:
            cls = torch.optim.AdamW if settings.name == "adamw" else torch.optim.Adam
            optimizer = cls(groups, lr=settings.lr, betas=settings.betas, eps=settings.eps, **kernel)
        warmup, total = settings.warmup_steps, None

        def factor(step: int) -> float:
            nonlocal total
            if step < warmup:
                return (step + 1) / warmup
            if settings.schedule == "constant" or step == warmup:
                return 1.0
            if total is None:
                # asked at the first step past the warmup, not here: asking Lightning while it configures the
                # optimizers builds the training loader before a resumed fit restores its loops, and the loader
                # then never gets a streaming split's saved position back (Lightning loads it only into a loader
                # it builds after the restore)
                total = max(1, int(self.trainer.estimated_stepping_batches))
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + float(np.cos(np.pi * progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
