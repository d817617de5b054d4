"""A finished run as a Python object: ``model = mmcore.load(RUN_DIR)``; ``model.encode("text", array)``.

Loading rebuilds the components from the run's resolved ``recipe.toml`` (so the plugins that made it must be
installed; a missing one is named with the distribution and version the run recorded in ``plugins.json``) and
loads the checkpoint's tensors with ``torch.load(weights_only=True)``: no code from the checkpoint is executed.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import numpy as np
import torch


class RunLoadError(Exception):
    """A run directory cannot be loaded (missing files, missing plugin, incompatible checkpoint)."""


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
    data: object
    device: torch.device

    @property
    def modalities(self) -> tuple:
        return tuple(self.module.encoders)

    @property
    def dim(self) -> int:
        return self.recipe.embed_dim

    @torch.no_grad()
    def encode(self, modality: str, inputs, batch_size: int = 4096, progress=None) -> np.ndarray:
        """Embed ``inputs`` (``[N, input_dim]`` numpy array, memory map or tensor) in batches -> ``[N, dim]``.

        ``progress``: optional callable ``(done, total)`` called after each batch.
        """
        if modality not in self.module.encoders:
            raise KeyError(f"no encoder for modality {modality!r}; this run has: {', '.join(self.modalities)}")
        encoder = self.module.encoders[modality]
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        for start in range(0, len(inputs), batch_size):
            chunk = torch.from_numpy(np.array(inputs[start:start + batch_size], dtype=np.float32))
            z = torch.nn.functional.normalize(encoder(chunk.to(self.device)), dim=-1)
            out[start:start + len(chunk)] = z.float().cpu().numpy()
            if progress:
                progress(start + len(chunk), len(inputs))
        return out

    def embed_split(self, split: str = "test"):
        """Embed every modality of one of the run's dataset splits -> :class:`mmcore.EmbeddedSplit`."""
        from .contracts import EmbeddedSplit

        z, present, labels = {m: [] for m in self.modalities}, {m: [] for m in self.modalities}, []
        for batch in self.data.loader(getattr(self.data.splits, split)):  # in-memory or streamed alike
            for m in self.modalities:
                z[m].append(self.encode(m, batch["inputs"][m].numpy()))
                present[m].append(batch["present"][m].numpy().astype(bool))
            if batch.get("label") is not None:
                labels.append(np.asarray(batch["label"]))
        return EmbeddedSplit(z={m: np.concatenate(v) for m, v in z.items()},
                             present={m: np.concatenate(v) for m, v in present.items()},
                             labels=np.concatenate(labels) if labels else None,
                             trained_pairs=self.module.trained_pairs, class_names=self.data.splits.class_names)


def load(run_dir: str | Path, checkpoint: str = "last.ckpt", device: str | None = None) -> TrainedModel:
    """Load a run written by ``mmcore run``: its resolved recipe, components and checkpointed weights."""
    from .recipe import RecipeError, load_recipe
    from .registry import UnknownComponentError
    from .runner import assemble

    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints" / checkpoint
    for needed in (run_dir / "recipe.toml", ckpt):
        if not needed.is_file():
            raise RunLoadError(f"{needed} not found: is {run_dir} a finished mmcore run?")
    try:
        recipe, _ = load_recipe(run_dir / "recipe.toml")
        module, data = assemble(recipe)
    except (RecipeError, UnknownComponentError) as exc:
        raise RunLoadError(f"cannot rebuild {run_dir}: {exc}{_missing_plugin_hint(run_dir, str(exc))}") from exc
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
    except Exception as exc:  # noqa: BLE001 - unpickling and shape errors all mean "not this run's checkpoint"
        raise RunLoadError(f"cannot load {ckpt}: {type(exc).__name__}: {exc}") from exc
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    module.to(target).eval()
    return TrainedModel(run_dir, recipe, module, data, target)
