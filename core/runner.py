"""The runner: assemble a recipe's components into a Lightning module and data module, train, evaluate, record.

Lightning owns the loop, devices (``accelerator = "auto"``), DDP, checkpoints, progress bars and logging. mmcore
owns one piece of math here, :func:`term_loss`: a contrastive term over the *global* batch. Each rank
scores its own query rows against the candidates gathered from every rank (gathered with gradients), so the loss
and the gradients equal those of one process holding the whole batch.

A run directory holds ``recipe.toml`` (resolved), ``sources/`` (the files of the extends chain), ``plugins.json``,
``environment.json``, ``metrics.json``, ``checkpoints/`` and ``tb/`` (TensorBoard events). It is never reused
silently.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import attrs
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, default_collate

from .contracts import AnchorContext, Batch, ConfigError, EmbeddedSplit, EncoderContext, LossContext
from .data import collate as batched_collate
from .recipe import Recipe, RecipeError, dump_toml, nearest_hint, recipe_to_dict
from .registry import Registry, get_registry

REFERENCE_SIZE = 5000
"""How many training samples are embedded as the evaluators' reference set (prototypes, kNN)."""


class RunDirectoryExists(Exception):
    """The requested run directory already holds a run (or cannot be used)."""


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or infinite (``trainer.on_nonfinite = "stop"``)."""


# ------------------------------------------------------------------------------------------ distributed


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (``[n, ...]``, same shape on every rank) from all ranks -> ``[world * n, ...]``.

    Gradients flow back to the rank that produced each row (the backward sums the incoming gradients across
    ranks). The identity when not distributed.
    """
    world, _ = _world()
    if world == 1:
        return x
    # The autograd gather has moved between torch releases; older names warn as deprecated on newer torch.
    from torch.distributed import _functional_collectives as funcol

    gather = getattr(funcol, "all_gather_single_autograd", None) or getattr(funcol, "all_gather_tensor_autograd", None)
    if gather is not None:
        return funcol.wait_tensor(gather(x.contiguous(), 0, torch.distributed.group.WORLD))
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather_with_grad` for masks and labels."""
    world, _ = _world()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    world, _ = _world()
    if world == 1:
        return x
    x = x.clone()
    torch.distributed.all_reduce(x)
    return x


@functools.cache
def _takes_term(loss_type: type) -> bool:
    """Whether a loss's ``rows`` accepts ``term=`` (the term's name, for settings that differ by term)."""
    return "term" in inspect.signature(loss_type.rows).parameters


def term_loss(loss: nn.Module, term) -> torch.Tensor:
    """Mean contrastive loss of one :class:`AlignmentTerm` over the global batch's valid rows.

    Each rank scores its own query rows against the candidates of every rank. Rank ``r`` returns
    ``world * (sum of its rows' losses) / (number of valid rows on all ranks)``: the gather's backward sums
    gradients over ranks and DDP averages them, so the update equals the single-process gradient of the global
    mean. Symmetric terms average the query->key and key->query directions.
    """
    world, rank = _world()
    named = {"term": term.name} if _takes_term(type(loss)) else {}
    mask = term.mask.bool()
    n = mask.shape[0]
    targets = torch.arange(n, device=mask.device) + rank * n
    mask_all = gather_no_grad(mask)
    labels = None if term.labels is None else gather_no_grad(term.labels)
    if term.symmetric and world == 1 and hasattr(loss, "pair_rows"):  # one matmul for both directions
        rows, back = loss.pair_rows(term.query, term.key, labels, mask_all, **named)
        total = (torch.where(mask, rows, 0.0).sum() + torch.where(mask, back, 0.0).sum()) / 2
    else:
        rows = loss.rows(term.query, gather_with_grad(term.key), targets, labels, mask_all, "forward", **named)
        total = torch.where(mask, rows, 0.0).sum()
        if term.symmetric:
            back = loss.rows(term.key, gather_with_grad(term.query), targets, labels, mask_all, "reverse", **named)
            total = (total + torch.where(mask, back, 0.0).sum()) / 2
    count = sum_over_ranks(mask.sum().to(rows.dtype)).clamp_min(1.0)
    return total * world / count


# ------------------------------------------------------------------------------------------ the module


class BindingModule(L.LightningModule):
    """Encoders per modality, an anchor strategy and a loss, trained as one LightningModule.

    Every learnable thing (encoders, the loss's temperature, the strategy's own parameters) is a submodule, so it is
    optimised and checkpointed.
    """

    def __init__(self, recipe: Recipe, encoders: dict, loss: nn.Module, evaluators: list, observed_pairs: frozenset,
                 class_names: tuple = ()):
        super().__init__()
        self.recipe = recipe
        self.encoders = nn.ModuleDict(encoders)
        self.loss = loss
        self.strategy: nn.Module | None = None
        self.evaluators = evaluators
        self.observed_pairs = observed_pairs
        self.class_names = class_names
        self.test_metrics: dict = {}
        self.skipped_batches = 0
        self._pending_checks: list = []  # (host flags, CUDA event, term names, step, epoch), oldest first
        self._collected: dict = {}
        for modality, section in recipe.encoders.items():
            if section.frozen:
                self.encoders[modality].requires_grad_(False)

    # -- the math -----------------------------------------------------------------------------------------

    def embed(self, batch: Batch) -> dict:
        """``{m: [B, d]}`` L2-normalised embeddings (rows of absent samples are meaningless; see ``present``)."""
        return {m: F.normalize(self.encoders[m](batch.inputs[m]), dim=-1) for m in self.encoders}

    def objective(self, batch: Batch) -> dict:
        """All weighted loss terms of a batch: ``{term name: scalar}`` (their sum is what is minimised)."""
        z = self.embed(batch)
        alignment = self.strategy(z, batch.present, batch)
        losses = {term.name: term.weight * term_loss(self.loss, term) for term in alignment.terms}
        for name, value in alignment.aux_losses.items():
            losses[name] = value
        return losses

    # -- Lightning hooks ----------------------------------------------------------------------------------

    def _step(self, data: dict, stage: str) -> torch.Tensor | None:
        batch = Batch.from_collated(data)
        losses = self.objective(batch)
        if stage == "train" and not self._check_finite(losses):
            return None
        total = torch.stack(list(losses.values())).sum()
        on_step = stage == "train"
        size = batch.size
        self.log_dict({f"{stage}/loss/{k}": v.detach() for k, v in losses.items()}, on_step=on_step,
                      on_epoch=not on_step, batch_size=size, sync_dist=not on_step)
        self.log(f"{stage}/loss", total.detach(), on_step=on_step, on_epoch=not on_step, prog_bar=True,
                 batch_size=size, sync_dist=not on_step)
        return total

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
        total = self._step(data, "train")
        if total is None:
            return None
        self.log("train/temperature", 1.0 / self.loss.logit_scale.detach(), on_step=True, batch_size=1)
        for name, own in getattr(self.loss, "per_term", {}).items():
            self.log(f"train/temperature/{name}", 1.0 / own.logit_scale.detach(), on_step=True, batch_size=1)
        # a device tensor made by a fill kernel: logging the float would copy it host->device, a sync every step
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", torch.full((), lr, device=total.device), on_step=True, batch_size=1)
        return total

    def validation_step(self, data, batch_idx):
        self._step(data, "val")

    def on_test_epoch_start(self):
        self._collected = {}

    def test_step(self, data, batch_idx, dataloader_idx: int = 0):
        batch = Batch.from_collated(data)
        z = self.embed(batch)
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
        )

    @property
    def trained_pairs(self) -> frozenset:
        pairs = getattr(self.strategy, "trained_pairs", None)
        return frozenset(pairs(self.observed_pairs)) if callable(pairs) else self.observed_pairs

    def on_test_epoch_end(self):
        split = self._embedded(self._collected[0])
        if 1 in self._collected:
            split = attrs.evolve(split, reference=self._embedded(self._collected[1]))
        metrics = {"samples": float(len(split.labels) if split.labels is not None else len(next(iter(split.z.values()))))}
        for evaluate in self.evaluators:
            metrics.update(evaluate(split))
        self.test_metrics = metrics
        self.test_split = split
        for key, value in metrics.items():
            self.log(f"test/{key}", value, rank_zero_only=True)

    def configure_optimizers(self):
        settings = self.recipe.optimizer
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": settings.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        if settings.name == "sgd":
            optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=0.9)
        else:
            cls = torch.optim.AdamW if settings.name == "adamw" else torch.optim.Adam
            optimizer = cls(groups, lr=settings.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = settings.warmup_steps

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if settings.schedule == "constant":
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + float(np.cos(np.pi * progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class EpochShuffle(torch.utils.data.Sampler):
    """A permutation that depends only on ``(seed, epoch)``, not on the global RNG.

    Lightning calls ``set_epoch`` before each epoch, so a run resumed from a checkpoint sees exactly the batches
    the uninterrupted run would have seen.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        for chunk in torch.randperm(self.size, generator=generator).split(1 << 16):
            yield from chunk.tolist()  # 8 bytes per row held, not a Python list of every index

    def __len__(self) -> int:
        return self.size


class BindingData(L.LightningDataModule):
    """Train/val/test loaders over a dataset's splits; the test stage also embeds a training subset as reference."""

    def __init__(self, splits, batch_size: int, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.splits = splits
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def loader(self, dataset, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
        """A DataLoader in the batch contract over any split (batched fetch when the dataset offers it)."""
        batched = hasattr(dataset, "__getitems__") and (
            not isinstance(dataset, Subset) or hasattr(dataset.dataset, "__getitems__"))
        return DataLoader(
            dataset,
            batch_size=min(self.batch_size, len(dataset)),
            sampler=EpochShuffle(len(dataset), self.seed) if shuffle else None,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),  # lets Lightning's non_blocking copy to the GPU overlap compute
            collate_fn=batched_collate if batched else default_collate,
        )

    def train_dataloader(self):
        # drop_last keeps every rank's batch the same shape, which the cross-rank gather needs
        return self.loader(self.splits.train, shuffle=True, drop_last=True)

    def val_dataloader(self):
        return self.loader(self.splits.val, shuffle=False)

    def test_dataloader(self):
        reference = Subset(self.splits.train, range(min(REFERENCE_SIZE, len(self.splits.train))))
        return [self.loader(self.splits.test, shuffle=False), self.loader(reference, shuffle=False)]


# ------------------------------------------------------------------------------------------ assembling


def _build(component, config, context, path: str, registry: Registry, kind: str):
    """Build one component; its errors become recipe errors at ``path`` (a plugin's crash names the plugin)."""
    try:
        return component.build(config, context)
    except ConfigError as exc:
        raise RecipeError([f"{path}.{exc.field}: {exc}"]) from exc
    except RecipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, never a traceback
        owner = registry.distribution_of(kind, component.name)
        raise RecipeError([f"{path}: building {component.name!r} (from {owner}) failed: "
                           f"{type(exc).__name__}: {exc}"]) from exc


def assemble(recipe: Recipe, registry: Registry | None = None) -> tuple[BindingModule, BindingData]:
    """Build every component of a recipe. Raises RecipeError for settings that are invalid in context (an anchor
    modality without an encoder, a modality the dataset lacks, ...)."""
    registry = registry or get_registry()
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    splits = _build(registry.get("datasets", recipe.dataset.name), recipe.dataset.config, None, "dataset", registry,
                    "datasets")
    problems = [
        f"encoders.{m}: the dataset {recipe.dataset.name!r} has no modality {m!r}; it has: "
        + ", ".join(splits.input_dims)
        for m in recipe.encoders if m not in splits.input_dims
    ]
    if problems:
        raise RecipeError(problems)
    modalities = recipe.modalities
    observed = frozenset(p for p in splits.observed_pairs if p <= set(modalities))

    encoders = {}
    for m, section in recipe.encoders.items():
        context = EncoderContext(m, splits.input_dims[m], recipe.embed_dim)
        encoders[m] = _build(registry.get("encoders", section.name), section.config, context, f"encoders.{m}",
                             registry, "encoders")
    loss = _build(registry.get("losses", recipe.loss.name), recipe.loss.config, LossContext(recipe.embed_dim), "loss",
                  registry, "losses")
    evaluators = [
        _build(registry.get("evaluators", e.name), e.config, None, f"evaluators[{i}]", registry, "evaluators")
        for i, e in enumerate(recipe.evaluators)
    ]
    module = BindingModule(recipe, encoders, loss, evaluators, observed, splits.class_names)
    anchor_context = AnchorContext(modalities, observed, recipe.embed_dim, functools.partial(term_loss, module.loss))
    module.strategy = _build(registry.get("anchor_strategies", recipe.anchor.name), recipe.anchor.config,
                             anchor_context, "anchor", registry, "anchor_strategies")
    data = BindingData(splits, recipe.trainer.batch_size, recipe.trainer.num_workers, recipe.seed)
    check_per_term_names(module, data)
    if recipe.trainer.compile:
        for m in list(module.encoders):
            module.encoders[m] = torch.compile(module.encoders[m])
    return module, data


def check_per_term_names(module: BindingModule, data: BindingData) -> None:
    """A loss's ``per_term`` settings must name terms the anchor strategy makes. Term names exist only at run time,
    so one training batch is embedded and aligned (no gradients, RNG untouched) to list them; a typo fails here,
    before training, with the real names."""
    configured = list(getattr(module.loss, "per_term", {}))
    if not configured:
        return
    batch = Batch.from_collated(next(iter(data.loader(data.splits.train))))
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        was_training = module.training
        module.eval()
        names = [term.name for term in module.strategy(module.embed(batch), batch.present, batch).terms]
        module.train(was_training)
    problems = [f"loss.per_term.{name}: the anchor strategy makes no term {name!r}"
                f"{nearest_hint(name, names, 'its terms')}" for name in configured if name not in names]
    if problems:
        raise RecipeError(problems)


# ------------------------------------------------------------------------------------------ run directories


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader (or a kill) never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


RUN_DIR_ENV = "MMCORE_RUN_DIR"
"""Set by the process that chose the run directory, so the processes Lightning starts for DDP use the same one."""


def launcher_rank() -> int:
    """This process's global rank as set by a launcher (Lightning's DDP children, torchrun, SLURM), else 0."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def make_run_dir(recipe: Recipe, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """A fresh run directory: ``--out DIR`` (refused if it holds anything, unless ``overwrite``), else the first
    free ``<output_dir>/<recipe name>-<n>``.

    Only rank 0 chooses. Other ranks use the directory rank 0 exported (Lightning's DDP launcher starts them
    after the choice) or ``--out``; processes started independently by torchrun or SLURM must be given ``--out``.
    """
    if launcher_rank() > 0:
        if os.environ.get(RUN_DIR_ENV):
            return Path(os.environ[RUN_DIR_ENV])
        if out is None:
            raise RunDirectoryExists("with several processes started by a launcher (torchrun, SLURM), give every "
                                     "process the same run directory with --out DIR")
        Path(out).mkdir(parents=True, exist_ok=True)
        return Path(out)
    path = _fresh_run_dir(recipe, out, overwrite)
    os.environ[RUN_DIR_ENV] = str(path.resolve())
    return path


def _fresh_run_dir(recipe: Recipe, out: str | Path | None, overwrite: bool) -> Path:
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            if not overwrite:
                raise RunDirectoryExists(
                    f"{path} already exists and is not empty; pass --overwrite to replace it, or choose another --out")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(recipe.output_dir)
    base.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = base / f"{recipe.name}-{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def environment_record() -> dict:
    import lightning

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "argv": sys.argv,
    }


def plugins_record(registry: Registry) -> list:
    return [attrs.asdict(p) for p in registry.plugins]


def _flatten(data, prefix: str = "") -> dict:
    out = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        for i, value in enumerate(data):
            out.update(_flatten(value, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = data if isinstance(data, (int, float, str, bool)) else str(data)
    return out


class RandomState(L.Callback):
    """Saves the torch/numpy/python RNG states in every checkpoint and restores them when training resumes, at
    ``on_train_start`` (after Lightning's sanity check, which may draw random numbers)."""

    def __init__(self):
        self.pending = None

    def state_dict(self) -> dict:
        import random

        numpy_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        }

    def load_state_dict(self, state: dict) -> None:
        self.pending = state

    def on_train_start(self, trainer, module) -> None:
        import random

        if self.pending is None:
            return
        state, self.pending = self.pending, None
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        numpy_state = state["numpy"]
        np.random.set_state((numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
        python_state = state["python"]
        random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))


class InterruptCheckpoint(L.Callback):
    """Saves ``interrupted.ckpt`` when a run stops on SIGTERM, Ctrl-C or an error (not a non-finite loss, whose
    message names the last good checkpoint instead).

    Lightning's own ``OnExceptionCheckpoint`` is not used: its presence makes ``fit(ckpt_path=None)`` silently
    resume from the newest checkpoint in the directory (Lightning#19827); mmcore resumes only when asked.
    """

    def __init__(self, path: Path):
        self.path = path

    def on_exception(self, trainer, module, exception) -> None:
        if isinstance(exception, NonFiniteLoss):  # the weights may already hold the bad step: keep last.ckpt
            return
        trainer.save_checkpoint(self.path)


class DropOrphanBest(L.Callback):
    """On resume, deletes the ``best-*.ckpt`` files that the restored best-checkpoint callback does not track.

    A kill between an epoch's best and last checkpoint writes leaves a best file that ``last.ckpt`` (from the
    epoch before) does not know: the resumed run would never delete it and would write its own copy of that epoch
    under a ``-v1`` name. Nothing is deleted when the callback's state was not restored (a moved run directory)."""

    def __init__(self, best):
        self.best = best

    def on_train_start(self, trainer, module) -> None:
        if trainer.ckpt_path is None or not trainer.is_global_zero or not self.best.best_k_models:
            return
        keep = {Path(path).resolve() for path in self.best.best_k_models}
        for path in Path(self.best.dirpath).glob("best-*.ckpt"):
            if path.resolve() not in keep:
                path.unlink(missing_ok=True)


def make_trainer(recipe: Recipe, run_dir: Path, **overrides) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    t = recipe.trainer
    interactive = sys.stdout.isatty() and os.environ.get("CI", "").lower() not in ("1", "true")
    # best-by-validation-loss, and last.ckpt at every epoch end. Not `save_last=True` on the monitored checkpoint:
    # Lightning rewrites that last.ckpt only in epochs where the best one changes, so it goes stale.
    best = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best-epoch{epoch}-step{step}", auto_insert_metric_name=False,
        monitor="val/loss", mode="min", save_top_k=1,
    )
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           every_n_epochs=1, enable_version_counter=False)
    options = dict(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=t.gradient_clip_val or None,
        deterministic=t.deterministic,
        logger=TensorBoardLogger(save_dir=str(run_dir), name="", version="tb", default_hp_metric=False),
        # last.ckpt at every epoch end (exact resume); interrupted.ckpt when a run stops on SIGTERM/Ctrl-C/error
        callbacks=[best, last, RandomState(), InterruptCheckpoint(run_dir / "checkpoints" / "interrupted.ckpt"),
                   DropOrphanBest(best)],
        default_root_dir=str(run_dir),
        enable_progress_bar=interactive,
        enable_model_summary=interactive,
    )
    options.update(overrides)
    return L.Trainer(**options)


def check_writable(run_dir: Path, module: nn.Module) -> None:
    """Fail before training, not after an hour: the run directory must be writable and have room for two
    checkpoints (weights plus Adam's two moments) and a margin."""
    probe = run_dir / ".write-test"
    try:
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise RunDirectoryExists(f"cannot write to {run_dir}: {exc.strerror or exc}") from exc
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    need = 2 * 3 * params + 64 * 2**20
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise RunDirectoryExists(f"not enough free space in {run_dir}: {free / 2**20:.0f} MiB free, about "
                                 f"{need / 2**20:.0f} MiB needed for checkpoints")


def train(recipe: Recipe, sources: list, run_dir: Path, registry: Registry | None = None,
          module_data: tuple | None = None, resume: bool = False) -> dict:
    """Train and evaluate a recipe into ``run_dir`` (already created). Returns the test metrics.

    ``resume``: continue from ``run_dir/checkpoints/last.ckpt`` (written at every epoch end) with the optimizer,
    schedule, temperatures, strategy parameters, epoch and RNG states it holds; the data order depends only on
    (seed, epoch), so the resumed run reaches the same final state as an uninterrupted one.
    """
    registry = registry or get_registry()
    module, data = module_data or assemble(recipe, registry)
    ckpt_path = None
    if resume:
        ckpt_path = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt_path.is_file():
            raise RunDirectoryExists(f"nothing to resume: {ckpt_path} does not exist (the run stopped before its "
                                     "first epoch ended; start it again)")
    if launcher_rank() == 0:
        check_writable(run_dir, module)
        write_atomic(run_dir / "recipe.toml", dump_toml(recipe_to_dict(recipe)))
        if not resume:
            (run_dir / "sources").mkdir(exist_ok=True)
            for i, source in enumerate(sources):
                shutil.copyfile(source, run_dir / "sources" / f"{i}-{Path(source).name}")
        write_atomic(run_dir / "plugins.json", json.dumps(plugins_record(registry), indent=2))
        write_atomic(run_dir / "environment.json", json.dumps(environment_record(), indent=2))

    trainer = make_trainer(recipe, run_dir)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
    trainer.test(module, datamodule=data, verbose=False)
    metrics = module.test_metrics
    if trainer.is_global_zero:
        from .report import have_matplotlib, write_run_pictures

        write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
        pairs = {"trained": sorted(sorted(p) for p in module.trained_pairs),
                 "observed": sorted(sorted(p) for p in module.observed_pairs)}
        write_atomic(run_dir / "pairs.json", json.dumps(pairs, indent=2))
        write_run_pictures(run_dir, module.test_split, metrics, trainer.logger.experiment, trainer.global_step)
        if not have_matplotlib():
            print("mmcore: figures skipped (pip install matplotlib to get PNGs)", file=sys.stderr)
        trainer.logger.log_hyperparams(_flatten(recipe_to_dict(recipe)),
                                       metrics={f"test/{k}": v for k, v in metrics.items()})
        trainer.logger.finalize("success")
    return metrics


def evaluate_run(run_dir: Path, registry: Registry | None = None, checkpoint: str = "last.ckpt") -> dict:
    """Re-run a trained run's evaluators on its checkpoint. Returns the metrics (nothing in the run is changed).

    The checkpoint is loaded by :func:`mmcore.load` (``weights_only=True``: a tampered file is refused)."""
    from .trained import load

    model = load(run_dir, checkpoint)
    trainer = make_trainer(model.recipe, Path(run_dir), logger=False, callbacks=[])
    trainer.test(model.module, datamodule=model.data, verbose=False)
    return model.module.test_metrics
