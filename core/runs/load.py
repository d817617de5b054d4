"""A finished run as a Python object: ``model = mmcore.load(RUN_DIR)``; ``model.encode("text", array)``.

Loading rebuilds the components from the run directory alone: the resolved ``recipe.toml`` and ``model.json``
(each modality's input spec, the observed pairs, the class names), so the training data may have moved or be gone.
The plugins that made the run must be installed (a missing one is named with the distribution and version the run
recorded in ``plugins.json``). The checkpoint's tensors are loaded with ``torch.load(weights_only=True)``: no code
from the checkpoint is executed. ``checkpoint`` names a file in ``RUN_DIR/checkpoints`` (``last`` and ``best`` are
short for ``last.ckpt`` and the ``best-*.ckpt`` file). Data is needed only to embed or evaluate a split:
:meth:`TrainedModel.data` builds the run's dataset (``overrides`` such as ``dataset.path=NEW`` point it at data
that moved).
"""

from __future__ import annotations

import json
import os
import re
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
    checkpoint: Path | None = None

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

    @property
    def fingerprint(self) -> str:
        """A short hash of the encoders' weights (names, shapes, dtypes and up to 4,096 evenly spaced values of every
        tensor; exact on any device): the same for every copy of this run and checkpoint wherever it lies, and
        different for another run or checkpoint. An index records it, so that a search with another run's
        encoders (whose space is another) is refused."""
        import hashlib

        digest = hashlib.blake2b(digest_size=16)
        for name, tensor in sorted(self.module.encoders.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            count = min(flat.numel(), 4096)  # evenly spaced, in exact integer arithmetic (the same on any device)
            picks = (torch.arange(count, dtype=torch.int64) * max(flat.numel() - 1, 0) // max(count - 1, 1))
            picks = picks.to(flat.device)
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            digest.update(flat[picks].double().cpu().numpy().tobytes())
        return digest.hexdigest()

    @torch.no_grad()
    def encode(self, modality: str, inputs, batch_size: int = 4096, progress=None, out=None) -> np.ndarray:
        """Embed ``inputs`` in batches -> ``[N, dim]``: an array ``[N, *shape]`` (numpy, memory map or tensor) or a
        dict of them, as the modality's input spec says; for raw media a list of items. ``progress``: optional
        callable ``(done, total)``. ``out``: an array ``[N, dim]`` to write into (e.g. a memory map) and return.

        ``ValueError`` for inputs that are not what the run was trained on: another shape (one vector is
        ``array[None]``, one row), complex or non-numeric values, NaN or inf (naming the first such row), or a
        single raw item instead of a list of them; and for a ``batch_size`` that is not a positive integer."""
        if modality not in self.module.encoders:
            raise KeyError(f"no encoder for modality {modality!r}; this run has: {', '.join(self.modalities)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        spec = self.module.inputs.get(modality, InputSpec())
        if spec.media:
            return self._encode_raw(modality, raw_items(modality, spec, inputs),
                                    min(batch_size, self.recipe.trainer.batch_size), progress, out)
        check_input(modality, spec, inputs)
        encoder = self.module.encoders[modality]
        total = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
        out = _output(out, total, self.dim)
        for start in range(0, total, batch_size):
            index = slice(start, min(start + batch_size, total))
            chunk = _to_tensor(select_rows(inputs, index), spec)
            bad = _first_nonfinite_row(chunk)
            if bad is not None:
                raise ValueError(f"{modality}: row {start + bad} holds NaN or inf values (the first such row); "
                                 "embeddings of it would be meaningless")
            chunk = {k: v.to(self.device) for k, v in chunk.items()} if isinstance(chunk, dict) else chunk.to(self.device)
            z = torch.nn.functional.normalize(encoder(chunk), dim=-1)
            out[index] = z.float().cpu().numpy()
            if progress:
                progress(index.stop, total)
        return out

    def _encode_raw(self, modality: str, items: list, batch_size: int, progress, out=None) -> np.ndarray:
        """Raw media (paths, images, waveforms, strings) through the encoder's eval preprocessing -- exactly what
        evaluation during training applied -- then its collate and forward."""
        out = _output(out, len(items), self.dim)
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
        dataset = recipe_to_dict(self.recipe).get("dataset", {})
        for override in overrides:
            key = override.partition("=")[0].strip()
            value = dataset
            for part in key.split(".")[1:]:
                value = value.get(part) if isinstance(value, dict) else None
            if not isinstance(value, str):
                # a seed, a size or a noise level changes what the data is: the run would be scored on other data
                raise RunLoadError(f"--set {key}: only settings that say where the data is (paths, text values) can "
                                   f"change for a trained run; {key} is {value!r} in its recipe and changes what "
                                   "the data is")
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


def _output(out, rows: int, dim: int) -> np.ndarray:
    """``out`` (checked to be ``[rows, dim]``), or a new float32 array of that shape."""
    if out is None:
        return np.empty((rows, dim), dtype=np.float32)
    if tuple(out.shape) != (rows, dim):
        raise ValueError(f"out: expected an array [{rows}, {dim}], got shape {list(out.shape)}")
    return out


def _value_kind(values) -> str:
    """numpy's dtype kind of an array or tensor (``"f"`` float, ``"c"`` complex, ``"i"``/``"u"`` integer, ``"b"``
    bool, ``"U"``/``"S"``/``"O"``/``"V"`` not numbers); ``""`` for anything without a dtype."""
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return "c" if dtype.is_complex else "f" if dtype.is_floating_point else "b" if dtype == torch.bool else "i"
    return np.dtype(dtype).kind if dtype is not None else ""


def check_input(modality: str, spec: InputSpec, inputs) -> None:
    """``ValueError`` naming the modality when ``inputs`` cannot be what ``spec`` describes: an array (or dict of
    arrays) of real numbers ``[rows, *spec.shape]``."""
    if spec.fields:
        if not isinstance(inputs, dict) or set(inputs) != set(spec.fields):
            raise ValueError(f"{modality}: expected a dict with keys {sorted(spec.fields)}, got "
                             f"{sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__}")
        lengths = {name: len(value) if hasattr(value, "__len__") else None for name, value in inputs.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{modality}: the dict's arrays differ in rows: {lengths}")
        for name, value in inputs.items():
            check_input(f"{modality}.{name}", spec.fields[name], value)
        return
    shape = tuple(getattr(inputs, "shape", ()))
    expected = spec.shape
    if len(shape) != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, shape[1:])):
        want = ", ".join("*" if e is None else str(e) for e in expected)
        one = "; for one item give one row, e.g. array[None]" if len(shape) == len(expected) else ""
        raise ValueError(f"{modality}: expected inputs [rows, {want}], got "
                         + (f"an array of shape {list(shape)}" if hasattr(inputs, "shape") else type(inputs).__name__)
                         + one)
    kind = _value_kind(inputs)
    if kind not in ("f", "i", "u", "b"):
        raise ValueError(f"{modality}: expected real numbers ({spec.dtype}), got values of dtype {inputs.dtype}")


def raw_items(modality: str, spec: InputSpec, inputs) -> list:
    """``inputs`` of a raw-media modality as a list of items; ``ValueError`` for one item given alone (a string,
    a path: its characters would become items) or for numbers where raw media are expected (a vector, a 1-d
    array)."""
    if isinstance(inputs, (str, bytes, os.PathLike)):
        raise ValueError(f"{modality}: expected a list of raw {spec.media} items, got one {type(inputs).__name__}; "
                         f"for one item pass [item]")
    if _value_kind(inputs) in ("f", "c", "i", "u", "b") and (spec.media == "text" or getattr(inputs, "ndim", 0) <= 1):
        raise ValueError(f"{modality}: this run's encoder takes raw {spec.media} (a list of "
                         f"{'texts' if spec.media == 'text' else 'files or decoded items'}), not an array of "
                         f"numbers of shape {list(inputs.shape)}")
    return list(inputs)


def _first_nonfinite_row(chunk) -> int | None:
    """Index of the first row of a float tensor (or dict of tensors) with a NaN or inf value, else None."""
    if isinstance(chunk, dict):
        rows = [r for r in (_first_nonfinite_row(v) for v in chunk.values()) if r is not None]
        return min(rows) if rows else None
    if not chunk.is_floating_point() or chunk.ndim == 0:
        return None
    bad = ~torch.isfinite(chunk).reshape(len(chunk), -1).all(dim=1)
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None


def _to_tensor(values, spec: InputSpec):
    if isinstance(values, dict):
        return {k: _to_tensor(v, spec.fields.get(k, InputSpec())) for k, v in values.items()}
    dtype = getattr(torch, spec.dtype)
    if isinstance(values, torch.Tensor):
        return values.to(dtype)
    array = np.array(values)  # a copy: a read-only memory map is not handed to torch
    if not array.dtype.isnative:  # a big-endian file
        array = array.astype(array.dtype.newbyteorder("="))
    return torch.from_numpy(array).to(dtype)


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


CHECKPOINT_NAMES = {"last": "last.ckpt", "interrupted": "interrupted.ckpt"}
"""Short names ``--checkpoint`` accepts besides ``best`` (the ``best-*.ckpt`` file) and file names."""


def _step(name: str) -> int:
    found = re.search(r"step(\d+)\.ckpt$", name)
    return int(found[1]) if found else -1


def checkpoint_file(run_dir: Path, name: str) -> Path:
    """The file ``name`` means in ``run_dir/checkpoints``: a file name there (one path component), ``last``,
    ``interrupted``, or ``best`` (the ``best-epoch<E>-step<S>.ckpt`` the best-by-validation-loss callback keeps;
    the latest step if a kill left two). ``RunLoadError`` listing the checkpoints that exist otherwise."""
    folder = Path(run_dir) / "checkpoints"
    present = sorted(p.name for p in folder.glob("*.ckpt") if p.is_file()) if folder.is_dir() else []
    from .checkpoints import not_written

    listing = f"; {folder} holds: {', '.join(present)}" if present else f"; {folder} holds no checkpoint"
    if not present:
        listing += not_written(run_dir, "any")
    if name == "best":
        best = [n for n in present if n.startswith("best-")]
        if not best:
            why = not_written(run_dir, "best") if present else ""
            raise RunLoadError(f"checkpoint 'best': {run_dir} has no best-*.ckpt (written at the first validation "
                               f"of a run with a validation split){listing}{why}")
        return folder / max(best, key=lambda n: (_step(n), n))
    file = CHECKPOINT_NAMES.get(name, name)
    if Path(file).name != file or file in ("", ".", ".."):
        raise RunLoadError(f"checkpoint {name!r}: give the name of a file in {folder} (or last, best){listing}")
    if not (folder / file).is_file():
        raise RunLoadError(f"checkpoint {name!r}: no such checkpoint file{listing} (or say last, best)")
    return folder / file


def load(run_dir: str | Path, checkpoint: str = "last.ckpt", device: str | None = None) -> TrainedModel:
    """Load a run written by ``mmcore run`` from its directory alone: recipe, ``model.json`` and weights.
    ``checkpoint``: a file name in ``RUN_DIR/checkpoints``, ``last`` or ``best`` (:func:`checkpoint_file`).

    Runs written before ``model.json`` existed are rebuilt from their dataset (which must then still be there).
    ``RunLoadError`` for anything that is not a loadable run, naming the file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunLoadError(f"{run_dir} is not a run directory ({'a file' if run_dir.exists() else 'no such folder'})")
    if not (run_dir / "recipe.toml").is_file():
        raise RunLoadError(f"{run_dir / 'recipe.toml'} not found: is {run_dir} a finished mmcore run?")
    ckpt = checkpoint_file(run_dir, checkpoint)
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
    except RunLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged model.json or recipe.toml that a component rejects
        raise RunLoadError(f"cannot rebuild {run_dir} from its recipe.toml and {MODEL_FILE}: "
                           f"{type(exc).__name__}: {exc}") from exc
    state = _load_weights(ckpt)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise RunLoadError(f"{ckpt} does not fit the model that {run_dir}'s recipe.toml and {MODEL_FILE} describe "
                           f"(were they edited?): {details[0] if details else exc}") from exc
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    module.to(target).eval()
    return TrainedModel(run_dir, recipe, module, target, ckpt)


def _load_weights(ckpt: Path) -> dict:
    """The checkpoint's ``state_dict``, read with ``weights_only=True`` through the real ``torch.load`` (taken
    before plugins were imported: :func:`mmcore.runs.checkpoints.load_checkpoint`), so no code in the file runs;
    ``RunLoadError`` naming the file when it is not a checkpoint (damaged, truncated, or holding objects)."""
    from .checkpoints import load_checkpoint

    try:
        state = load_checkpoint(ckpt, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - unpickling, zip and EOF errors all mean "not a readable checkpoint"
        text = str(exc)
        reason = (text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
                  if "WeightsUnpickler error:" in text else text.split(". ")[0])
        raise RunLoadError(f"cannot load {ckpt}: not a checkpoint that loads with weights_only=True (damaged, "
                           f"truncated, or holding objects other than tensors): {type(exc).__name__}: "
                           f"{' '.join(reason.split())}") from exc
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise RunLoadError(f"cannot load {ckpt}: no state_dict in it (not a checkpoint written by mmcore run)")
    return state["state_dict"]



