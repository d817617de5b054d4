"""A finished run as a Python object: ``model = mmcore.load(RUN_DIR)``; ``model.encode("text", array)``.

Loading rebuilds the components from the run directory alone: the resolved ``recipe.toml`` and ``model.json``
(each modality's input spec, the observed pairs, the class names), so the training data may have moved or be gone.
The plugins that made the run must be installed (a missing one is named with the distribution and version the run
recorded in ``plugins.json``). The checkpoint's tensors are loaded with ``torch.load(weights_only=True)``: no code
from the checkpoint is executed. Data is needed only to embed or evaluate a split: :meth:`TrainedModel.data`
builds the run's dataset (``overrides`` such as ``dataset.path=NEW`` point it at data that moved).
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import numpy as np
import torch

from ..contracts import InputSpec, select_rows
from ..recipe import RecipeError, apply_overrides, load_recipe, recipe_to_dict, structure_recipe
from ..registry import UnknownComponentError, get_registry
from ..train.build import build_dataset, build_model
from ..train.data import BindingData
from .directory import MODEL_FILE
from .embed import embed_and_evaluate


class RunLoadError(Exception):
    """A run directory cannot be loaded (missing files, missing plugin, incompatible checkpoint or data)."""


def _missing_plugin_hint(run_dir: Path, message: str) -> str:
    try:
        plugins = json.loads((run_dir / "plugins.json").read_text())
    except (OSError, ValueError):
        return ""
    hints = []
    for plugin in plugins:
        for names in plugin.get("components", {}).values():
            for name in names:
                if f"'{name}'" in message and plugin["distribution"] != "mmcore":
                    hints.append(f"pip install {plugin['distribution']}=={plugin['version']}")
    return ("; this run was made with a plugin that is not installed: " + ", ".join(sorted(set(hints)))) if hints else ""


@attrs.define
class TrainedModel:
    """Trained encoders of a run. ``encode`` returns L2-normalised float32 numpy embeddings ``[N, dim]``."""

    run_dir: Path
    recipe: object
    module: object
    device: torch.device

    @property
    def modalities(self) -> tuple:
        return tuple(self.module.encoders)

    @property
    def dim(self) -> int:
        return self.recipe.embed_dim

    @property
    def inputs(self) -> dict:
        """modality -> :class:`mmcore.InputSpec` the run was trained on."""
        return dict(self.module.inputs)

    @torch.no_grad()
    def encode(self, modality: str, inputs, batch_size: int = 4096, progress=None) -> np.ndarray:
        """Embed ``inputs`` in batches -> ``[N, dim]``: an array ``[N, *shape]`` (numpy, memory map or tensor) or a
        dict of them, as the modality's input spec says. ``progress``: optional callable ``(done, total)``."""
        if modality not in self.module.encoders:
            raise KeyError(f"no encoder for modality {modality!r}; this run has: {', '.join(self.modalities)}")
        spec = self.module.inputs.get(modality, InputSpec())
        if spec.media:
            return self._encode_raw(modality, list(inputs), min(batch_size, self.recipe.trainer.batch_size), progress)
        check_input(modality, spec, inputs)
        encoder = self.module.encoders[modality]
        total = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
        out = np.empty((total, self.dim), dtype=np.float32)
        for start in range(0, total, batch_size):
            index = slice(start, min(start + batch_size, total))
            chunk = _to_tensor(select_rows(inputs, index), spec)
            chunk = {k: v.to(self.device) for k, v in chunk.items()} if isinstance(chunk, dict) else chunk.to(self.device)
            z = torch.nn.functional.normalize(encoder(chunk), dim=-1)
            out[index] = z.float().cpu().numpy()
            if progress:
                progress(index.stop, total)
        return out

    def _encode_raw(self, modality: str, items: list, batch_size: int, progress) -> np.ndarray:
        """Raw media (paths, images, waveforms, strings) through the encoder's eval preprocessing -- exactly what
        evaluation during training applied -- then its collate and forward."""
        out = np.empty((len(items), self.dim), dtype=np.float32)
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            z = self.module.encode_raw(modality, chunk)
            out[start:start + len(chunk)] = z.float().cpu().numpy()
            if progress:
                progress(start + len(chunk), len(items))
        return out

    def data(self, overrides: list = ()) -> BindingData:
        """The run's data module: its recipe's dataset, with ``overrides`` (``dataset.KEY=VALUE``; for data that
        moved) applied. Raises RunLoadError when the data is gone or gives other inputs than the run trained on."""
        bad = [o for o in overrides if not o.partition("=")[0].strip().startswith("dataset.")]
        if bad:
            raise RunLoadError(f"--set {bad[0]}: only dataset.* settings can change for a trained run")
        try:
            raw = apply_overrides(recipe_to_dict(self.recipe), list(overrides))
            recipe = structure_recipe(raw, get_registry(), str(self.run_dir / "recipe.toml"))
            splits = build_dataset(recipe)
        except (RecipeError, UnknownComponentError) as exc:
            raise RunLoadError(f"cannot build the data of {self.run_dir}: {exc}; if it moved, point at it with "
                               "--set dataset.<path setting>=NEW") from exc
        for m in self.modalities:
            if m in splits.inputs and splits.inputs[m] != self.module.inputs.get(m, splits.inputs[m]):
                raise RunLoadError(f"the data gives {m} inputs {splits.inputs[m].describe()}; the run was trained on "
                                   f"{self.module.inputs[m].describe()}")
        return BindingData(splits, self.recipe.trainer.batch_size, 0, self.recipe.seed, self.module.collators())

    def embed_split(self, split: str = "test", overrides: list = ()):
        """Embed one of the run's dataset splits with its reference set (the training subset the evaluators use
        for prototypes and kNN) -> :class:`mmcore.EmbeddedSplit`, exactly as at the end of training."""
        return embed_and_evaluate(self, split, overrides, evaluate=False)[0]


def check_input(modality: str, spec: InputSpec, inputs) -> None:
    """``ValueError`` naming the modality when ``inputs`` cannot be what ``spec`` describes."""
    if spec.fields:
        if not isinstance(inputs, dict) or set(inputs) != set(spec.fields):
            raise ValueError(f"{modality}: expected a dict with keys {sorted(spec.fields)}, got "
                             f"{sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__}")
        return
    shape = tuple(getattr(inputs, "shape", ()))
    expected = spec.shape
    if len(shape) != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, shape[1:])):
        raise ValueError(f"{modality}: expected inputs [rows, {', '.join('*' if e is None else str(e) for e in expected)}]"
                         f", got an array of shape {list(shape)}")


def _to_tensor(values, spec: InputSpec):
    if isinstance(values, dict):
        return {k: _to_tensor(v, spec.fields.get(k, InputSpec())) for k, v in values.items()}
    dtype = getattr(torch, spec.dtype)
    return torch.as_tensor(np.asarray(values)).to(dtype)


def _read_model_record(run_dir: Path):
    path = run_dir / MODEL_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        inputs = {m: InputSpec.from_dict(v) for m, v in record["inputs"].items()}
        observed = frozenset(frozenset(p) for p in record["observed_pairs"])
        return inputs, observed, tuple(record.get("class_names", ())), tuple(record.get("prompts", ()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunLoadError(f"{path} is damaged: {type(exc).__name__}: {exc}") from exc


def load(run_dir: str | Path, checkpoint: str = "last.ckpt", device: str | None = None) -> TrainedModel:
    """Load a run written by ``mmcore run`` from its directory alone: recipe, ``model.json`` and weights.

    Runs written before ``model.json`` existed are rebuilt from their dataset (which must then still be there)."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints" / checkpoint
    for needed in (run_dir / "recipe.toml", ckpt):
        if not needed.is_file():
            raise RunLoadError(f"{needed} not found: is {run_dir} a finished mmcore run?")
    try:
        recipe, _ = load_recipe(run_dir / "recipe.toml")
        record = _read_model_record(run_dir)
        if record is None:
            splits = build_dataset(recipe)
            record = (splits.inputs, splits.observed_pairs, splits.class_names, splits.prompts)
        inputs, observed, class_names, prompts = record
        module = build_model(recipe, inputs, observed, class_names, prompts=prompts, pretrained=False)
    except (RecipeError, UnknownComponentError) as exc:
        raise RunLoadError(f"cannot rebuild {run_dir}: {exc}{_missing_plugin_hint(run_dir, str(exc))}") from exc
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
    except Exception as exc:  # noqa: BLE001 - unpickling and shape errors all mean "not this run's checkpoint"
        raise RunLoadError(f"cannot load {ckpt}: {type(exc).__name__}: {exc}") from exc
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    module.to(target).eval()
    return TrainedModel(run_dir, recipe, module, target)



