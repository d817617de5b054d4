"""Writing a recipe back out: the structured :class:`Recipe` as plain data, and as TOML (with tomli-w).

What ``mmcore show`` prints and what a run directory stores as ``recipe.toml``; ``mmcore run`` accepts it as is.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from .schema import ComponentSection, EncoderSection, Recipe
from .structure import make_converter


def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as plain TOML-ready data (tables, arrays, scalars; paths as strings)."""
    converter = make_converter()

    def section(sec: ComponentSection) -> dict:
        out = {"name": sec.name}
        if isinstance(sec, EncoderSection):
            out["frozen"] = sec.frozen
            if sec.grad_checkpointing:
                out["grad_checkpointing"] = True
            for key in ("lr", "weight_decay"):
                if getattr(sec, key) is not None:
                    out[key] = getattr(sec, key)
        out.update(converter.unstructure(sec.config))
        return out

    return {
        "name": recipe.name,
        "seed": recipe.seed,
        "embed_dim": recipe.embed_dim,
        "output_dir": recipe.output_dir,
        "dataset": section(recipe.dataset),
        "encoders": {m: section(e) for m, e in recipe.encoders.items()},
        "anchor": section(recipe.anchor),
        "loss": section(recipe.loss),
        "evaluators": [section(e) for e in recipe.evaluators],
        # as TOML holds them: unset limits (None) left out, optimizer.betas a list
        "optimizer": _plain(converter.unstructure(recipe.optimizer)),
        "trainer": _plain(converter.unstructure(recipe.trainer)),
        "logger": converter.unstructure(recipe.logger),
    }


def _plain(value: Any) -> Any:
    """TOML has no null: ``None`` values are left out (an optional setting is unset by omitting it)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value if v is not None]
    if isinstance(value, PurePath):
        return str(value)
    return value


def dump_toml(data: dict) -> str:
    """Recipe-shaped data as TOML text. ``None`` values are omitted."""
    import tomli_w

    return tomli_w.dumps(_plain(data))
