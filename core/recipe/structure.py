"""Structuring a raw recipe dict with cattrs, against the registry, into a :class:`Recipe`; errors as TOML paths.

Component sections are structured in two passes: ``name`` is looked up in the registry (unknown names list what
is installed and the nearest match), then the remaining keys are structured into that component's attrs config
class. Every problem is reported at once, each with its TOML path.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from ..registry import Registry, UnknownComponentError
from .errors import RecipeError, nearest_hint
from .files import apply_overrides, read_recipe_file
from .schema import (ComponentSection, EncoderSection, Recipe, SECTION_KINDS, _Settings, _default_evaluators,
                     _default_loss)


def _strict(expected: tuple, name: str):
    def hook(value, _type):
        if isinstance(value, bool) and bool not in expected:
            raise TypeError(f"expected {name}, got a boolean")
        if not isinstance(value, expected):
            raise TypeError(f"expected {name}, got {type(value).__name__} {value!r}")
        if isinstance(value, float) and not math.isfinite(value) and float in expected:
            return value
        return value if _type is not float else float(value)

    return hook


def _int_or_str(value, _type):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"expected an integer or a string, got {type(value).__name__} {value!r}")
    return value


def _number_pair(value, _type):
    """``[a, b]`` of numbers (``optimizer.betas``) -> a tuple of floats."""
    if not isinstance(value, (list, tuple)) or len(value) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise TypeError(f"expected an array of two numbers, got {type(value).__name__} {value!r}")
    return tuple(float(v) for v in value)


def make_converter() -> cattrs.Converter:
    """A cattrs converter that rejects unknown keys and does not coerce types (``"3"`` is not an int)."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook_func(lambda type_: type_ == tuple[float, float], _number_pair)
    converter.register_structure_hook(int, _strict((int,), "an integer"))
    converter.register_structure_hook(float, _strict((int, float), "a number"))
    converter.register_structure_hook(str, _strict((str,), "a string"))
    converter.register_structure_hook(bool, _strict((bool,), "a boolean"))
    converter.register_structure_hook(int | str, _int_or_str)
    return converter


def toml_keys(cls: type) -> dict:
    """attribute name -> recipe key of an attrs class: the same, unless renamed with
    ``Annotated[T, cattrs.gen.override(rename="key")]`` (e.g. ``lambda_`` -> ``lambda``, a Python keyword)."""
    import typing

    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: no renames
        hints = {}
    keys = {}
    for field in attrs.fields(cls):
        key = field.name
        for extra in getattr(hints.get(field.name), "__metadata__", ()):
            key = getattr(extra, "rename", None) or key
        keys[field.name] = key
    return keys



def _field_names(cls: type) -> list:
    return list(toml_keys(cls).values())


def _describe(exc: BaseException, type_: Any) -> tuple[str, str]:
    """(extra path, message) for one leaf exception of a cattrs structuring error."""
    if isinstance(exc, ForbiddenExtraKeysError):
        valid = _field_names(exc.cl) if attrs.has(exc.cl) else []
        valid += getattr(exc, "mmcore_core_keys", [])
        parts = []
        for extra in sorted(exc.extra_fields):
            parts.append((extra, f"unknown key{nearest_hint(extra, sorted(valid), 'valid keys')}"))
        return parts[0] if len(parts) == 1 else ("", "; ".join(f"{k}: {m}" for k, m in parts))
    if isinstance(exc, KeyError):
        return "", "required setting missing"
    if isinstance(exc, cattrs.errors.CattrsError) and "not in literal" in str(exc):
        options = ", ".join(repr(a) for a in getattr(type_, "__args__", ()))
        return "", f"invalid value; expected one of {options}"
    if isinstance(exc, AttributeError) and "has no attribute 'items'" in str(exc):
        return "", "expected a table"
    message = str(exc)
    if isinstance(exc, ValueError) and len(exc.args) > 1 and isinstance(exc.args[0], str):
        message = exc.args[0]  # attrs' in_ validator: (message, attribute, options, value); str() is the tuple
    named = re.match(r"^'(\w+)' (.*)$", message)
    if named:  # attrs validator message: "'field' must be > 0, got -1"
        return named.group(1), named.group(2)
    return "", message or type(exc).__name__


def _rename_validator_path(line: str, cls: type) -> str:
    """Validator messages name attributes (``lambda_``); recipes name keys (``lambda``)."""
    for attribute, key in toml_keys(cls).items():
        if attribute != key:
            line = re.sub(rf"\.{attribute}:", f".{key}:", line)
    return line


def _join(path: str, part: str) -> str:
    if not part:
        return path
    if part.startswith("["):
        return path + part
    return f"{path}.{part}" if path else part


def flatten_errors(exc: BaseException, path: str) -> list:
    """Walk a cattrs error tree into ``"toml.path: message"`` lines."""
    if isinstance(exc, RecipeError):
        return list(exc.problems)
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        lines = []
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            part = note.name if isinstance(exc, ClassValidationError) else note.index
            key = f"[{part}]" if isinstance(part, int) else str(part)
            if isinstance(sub, (ClassValidationError, IterableValidationError, RecipeError)):
                lines += flatten_errors(sub, _join(path, key))
            else:
                extra, message = _describe(sub, note.type)
                lines.append(f"{_join(_join(path, key), extra) or '(top level)'}: {message}")
        for sub in without:
            lines += flatten_errors(sub, path)
        return lines
    extra, message = _describe(exc, None)
    return [f"{_join(path, extra) or '(top level)'}: {message}"]


class _Structurer:
    """Structures a raw recipe dict against a registry, collecting every problem with its TOML path."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.converter = make_converter()
        self.problems: list = []

    def attrs_class(self, data: Any, cls: type, path: str, core_keys: tuple = ()) -> Any:
        try:
            return self.converter.structure(data, cls)
        except Exception as exc:  # noqa: BLE001 - cattrs raises many kinds; all become recipe problems
            for sub in _leaves(exc):
                if isinstance(sub, ForbiddenExtraKeysError):
                    sub.mmcore_core_keys = list(core_keys)
            self.problems += [_rename_validator_path(line, cls) for line in flatten_errors(exc, path)]
            return None

    def component(self, data: Any, kind: str, path: str, core: dict | None = None) -> Any:
        if not isinstance(data, dict):
            self.problems.append(f"{path}: expected a table with a `name` key, got {type(data).__name__}")
            return None
        data = dict(data)
        name = data.pop("name", None)
        if name is None:
            self.problems.append(f"{path}.name: required setting missing (which component to use)")
            return None
        if not isinstance(name, str):
            self.problems.append(f"{path}.name: expected a string, got {type(name).__name__} {name!r}")
            return None
        try:
            component = self.registry.get(kind, name)
        except UnknownComponentError as exc:
            self.problems.append(f"{path}.name: {exc}")
            return None
        # keys a component renamed (``__mmcore_renamed__ = {"old": "new"}`` on its config class) still work; each
        # section is structured once per recipe, so the warning is printed once
        for old, new in getattr(component.config, "__mmcore_renamed__", {}).items():
            if old not in data:
                continue
            if new in data:
                self.problems.append(f"{path}.{old}: renamed {path}.{new}, and both are given; keep only {new}")
                return None
            data[new] = data.pop(old)
            import sys

            print(f"mmcore: warning: {path}.{old} is renamed {path}.{new}; the old name still works", file=sys.stderr)
        core_values = {}
        for key, (type_, default) in (core or {}).items():
            value = data.pop(key, default)
            wrong_bool = isinstance(value, bool) and bool not in (type_ if isinstance(type_, tuple) else (type_,))
            if not isinstance(value, type_) or wrong_bool:
                expected = "a number" if isinstance(type_, tuple) else type_.__name__
                self.problems.append(f"{path}.{key}: expected {expected}, got {value!r}")
            core_values[key] = value
        config = self.attrs_class(data, component.config, path, ("name", *(core or {})))
        return None if config is None else (name, config, core_values)


ENCODER_CORE_KEYS = {"frozen": (bool, False), "lr": ((int, float, type(None)), None),
                     "weight_decay": ((int, float, type(None)), None), "grad_checkpointing": (bool, False)}
"""Keys of an ``[encoders.<m>]`` section the core reads itself (the rest is the encoder's config)."""


REFUSED_TRAINER_KEYS = {
    "accumulate_grad_batches": (
        "not a setting: accumulating gradients over small batches changes a contrastive objective (each query sees "
        "only its own small batch's negatives). To train a batch larger than memory with the whole batch's gradient, "
        "set trainer.embed_chunk (the cached step: each encoder runs on that many rows at a time)"),
    "fast_dev_run": (
        "not a setting: Lightning's fast_dev_run switches the loggers and checkpoints off and evaluates one test "
        "batch, so the run's metrics.json would score a few samples. `mmcore validate RECIPE` runs every component "
        "on 16 training rows without training; for a short real run set trainer.max_steps and "
        "trainer.limit_val_batches (trainer.checkpoint = \"none\" writes no checkpoint)"),
}
"""Lightning ``Trainer`` arguments that are not ``[trainer]`` settings, and why (each named if a recipe sets it)."""


def _encoder_core(values: dict, modality: str, s) -> dict:
    out = dict(values)
    for key, low in (("lr", 0.0), ("weight_decay", -1e-300)):
        value = out[key]
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            out[key] = None  # absent, or already reported as the wrong type
            continue
        if not value > low:  # also rejects nan
            s.problems.append(f"encoders.{modality}.{key}: must be {'> 0' if key == 'lr' else '>= 0'}, got {value}")
        out[key] = float(value)
    return out


def _leaves(exc: BaseException):
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        for sub in exc.exceptions:
            yield from _leaves(sub)
    else:
        yield exc


def structure_recipe(raw: dict, registry: Registry, source: str = "") -> Recipe:
    """Turn a raw (already merged and overridden) recipe dict into a :class:`Recipe`, or raise RecipeError."""
    s = _Structurer(registry)
    raw = dict(raw)
    sections = {}
    for key, kind in SECTION_KINDS.items():
        value = raw.pop(key, _default_loss() if key == "loss" else None)
        if value is None:
            s.problems.append(f"{key}: required section missing ([{key}] with a `name`)")
            continue
        made = s.component(value, kind, key)
        sections[key] = made and ComponentSection(made[0], made[1])

    encoders = {}
    raw_encoders = raw.pop("encoders", None)
    if not isinstance(raw_encoders, dict) or not raw_encoders:
        s.problems.append("encoders: required section missing ([encoders.<modality>] with a `name`, one per modality)")
    else:
        for modality, section in raw_encoders.items():
            made = s.component(section, "encoders", f"encoders.{modality}", ENCODER_CORE_KEYS)
            encoders[modality] = made and EncoderSection(made[0], made[1], **_encoder_core(made[2], modality, s))

    evaluators = []
    raw_evaluators = raw.pop("evaluators", _default_evaluators())
    if not isinstance(raw_evaluators, list):
        s.problems.append("evaluators: expected an array of tables ([[evaluators]] with a `name`)")
    else:
        for index, section in enumerate(raw_evaluators):
            made = s.component(section, "evaluators", f"evaluators[{index}]")
            evaluators.append(made and ComponentSection(made[0], made[1]))

    settings_fields = {f.name for f in attrs.fields(Recipe)} - {"dataset", "encoders", "anchor", "loss", "evaluators"}
    placeholder = {"dataset": None, "encoders": {}, "anchor": None, "loss": None, "evaluators": []}
    for key in list(raw):
        if key not in settings_fields:
            valid = sorted(settings_fields | set(placeholder) | {"extends"})
            s.problems.append(f"{key}: unknown key{nearest_hint(key, valid, 'valid top-level keys')}")
            raw.pop(key)
    for key in ("optimizer", "trainer", "logger"):  # the core's own tables: a scalar or an array of tables is not one
        if key in raw and not isinstance(raw[key], dict):
            got = "an array of tables" if isinstance(raw[key], list) else f"{type(raw[key]).__name__} {raw[key]!r}"
            s.problems.append(f"{key}: expected a table ([{key}] with its settings), got {got}")
            raw.pop(key)
    for key, why in REFUSED_TRAINER_KEYS.items():
        if isinstance(raw.get("trainer"), dict) and key in raw["trainer"]:
            raw["trainer"] = {k: v for k, v in raw["trainer"].items() if k != key}
            s.problems.append(f"trainer.{key}: {why}")
    settings = s.attrs_class(raw, _Settings, "")
    if s.problems:
        raise RecipeError(s.problems, source)
    return Recipe(
        dataset=sections["dataset"],
        encoders=encoders,
        anchor=sections["anchor"],
        loss=sections["loss"],
        evaluators=evaluators,
        **attrs.asdict(settings, recurse=False),
    )



def load_recipe(path: str | Path, overrides: list = (), registry: Registry | None = None) -> tuple[Recipe, list]:
    """Read, merge, override and structure a recipe file. Returns the recipe and the files of its extends chain."""
    from ..registry import get_registry

    raw, files = read_recipe_file(path)
    try:
        raw = apply_overrides(raw, list(overrides))
    except RecipeError as exc:
        raise RecipeError(exc.problems, exc.source or str(path)) from None
    recipe = structure_recipe(raw, registry or get_registry(), str(path))
    if not recipe.name:
        try:
            recipe = attrs.evolve(recipe, name=Path(path).stem)
        except ValueError as exc:  # the name validator: the stem is not one clean path component
            reason = str(exc).replace("'name' ", "", 1)
            raise RecipeError([f"name: the recipe file's name {Path(path).stem!r} cannot name the run ({reason}); "
                               'set name = "..." in the recipe'], str(path)) from None
    return recipe, files


