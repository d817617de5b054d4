"""The TOML recipe: schema (attrs), loading (``extends`` and ``--set``), structuring (cattrs) and errors.

A recipe names one component per section and that component's settings::

    [dataset]                 # a dataset component and its settings
    name = "synthetic"
    [encoders.image]          # one encoder per modality; `frozen` is a core setting of every encoder
    name = "mlp"
    [anchor]                  # the anchor strategy
    name = "imagebind"
    modality = "image"
    [loss]                    # defaults to the built-in symmetric InfoNCE
    name = "infonce"
    [[evaluators]]            # defaults to retrieval + zero_shot + knn
    name = "retrieval"
    [optimizer] / [trainer]   # core settings, see OptimizerSettings and TrainerSettings

Component sections are structured in two passes: ``name`` is looked up in the registry (unknown names list what
is installed and the nearest match), then the remaining keys are structured into that component's attrs config
class. Every problem is reported at once, each with its TOML path; a recipe with problems raises
:class:`RecipeError` (the CLI exits 2 and writes nothing).

``extends = "base.toml"`` (relative to the file that says it) deep-merges tables and replaces arrays; a section
whose ``name`` changes replaces the base section instead of merging into it. ``--set a.b=v`` overrides apply after
``extends`` and before structuring; ``v`` is parsed as a TOML value, falling back to a bare string.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from .registry import Registry, UnknownComponentError


class RecipeError(Exception):
    """An invalid recipe. ``problems`` holds one ``"<toml.path>: <what is wrong>"`` line per problem."""

    def __init__(self, problems: list, source: str = ""):
        self.problems = list(problems)
        self.source = source
        head = f"invalid recipe {source}" if source else "invalid recipe"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


# --------------------------------------------------------------------------------------------------- schema


def _positive(instance, attribute, value):
    if not value > 0:  # also rejects nan
        raise ValueError(f"'{attribute.name}' must be > 0, got {value}")


def _non_negative(instance, attribute, value):
    if not value >= 0:  # also rejects nan
        raise ValueError(f"'{attribute.name}' must be >= 0, got {value}")


@attrs.frozen
class ComponentSection:
    """A component chosen by ``name`` plus its structured config (an instance of the component's attrs class)."""

    name: str
    config: Any


@attrs.frozen
class EncoderSection(ComponentSection):
    """An encoder section; ``frozen = true`` keeps the encoder's weights fixed (e.g. a pretrained anchor)."""

    frozen: bool = False


@attrs.frozen
class OptimizerSettings:
    """``[optimizer]``: AdamW/Adam/SGD over every trainable parameter, with an optional cosine schedule."""

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = attrs.field(default=1e-3, validator=_positive)
    weight_decay: float = attrs.field(default=0.0, validator=_non_negative)
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = attrs.field(default=0, validator=_non_negative)


@attrs.frozen
class TrainerSettings:
    """``[trainer]``: passed to ``lightning.Trainer`` (``accelerator = "auto"`` uses a GPU when there is one).

    ``compile`` wraps each encoder in ``torch.compile``; ``precision = "bf16-mixed"`` trains in bfloat16 autocast.
    ``on_nonfinite``: a NaN/inf loss term either stops the run (``"stop"``: the message names the term, the step and
    the last good checkpoint) or skips that batch's update (``"skip"``, counted in ``train/skipped_batches``).
    """

    max_epochs: int = attrs.field(default=10, validator=_positive)
    batch_size: int = attrs.field(default=256, validator=_positive)
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = attrs.field(default=1, validator=_positive)
    precision: int | str = "32-true"
    num_workers: int = attrs.field(default=0, validator=_non_negative)
    log_every_n_steps: int = attrs.field(default=10, validator=_positive)
    gradient_clip_val: float = attrs.field(default=0.0, validator=_non_negative)
    deterministic: bool = False
    compile: bool = False
    on_nonfinite: Literal["stop", "skip"] = "stop"


def _default_loss() -> dict:
    return {"name": "infonce"}


def _default_evaluators() -> list:
    return [{"name": "retrieval"}, {"name": "zero_shot"}, {"name": "knn"}]


@attrs.frozen
class Recipe:
    """A whole run. ``name`` defaults to the recipe file's stem and names the run directory."""

    dataset: ComponentSection
    encoders: dict[str, EncoderSection]
    anchor: ComponentSection
    loss: ComponentSection
    evaluators: list[ComponentSection]
    optimizer: OptimizerSettings = OptimizerSettings()
    trainer: TrainerSettings = TrainerSettings()
    embed_dim: int = attrs.field(default=128, validator=_positive)
    seed: int = 0
    output_dir: str = "runs"
    name: str = ""

    @property
    def modalities(self) -> tuple:
        return tuple(self.encoders)


SECTION_KINDS = {"dataset": "datasets", "anchor": "anchor_strategies", "loss": "losses"}


# ------------------------------------------------------------------------------------------- reading files


def _read_toml(path: Path, chain: tuple) -> dict:
    where = " (extended from " + " -> ".join(str(p) for p in chain) + ")" if chain else ""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RecipeError([f"extends: file not found: {path}{where}" if chain else f"file not found: {path}"])
    except IsADirectoryError:
        raise RecipeError([f"not a file: {path}{where}"])
    except UnicodeDecodeError as exc:
        raise RecipeError([f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})"])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"{path}: not valid TOML: {exc}"])
    if not data:
        raise RecipeError([f"{path}: empty recipe (expected at least [dataset], [encoders.*] and [anchor])"])
    return data


def _merge(base: dict, child: dict) -> dict:
    """Deep-merge tables, replace arrays; a table whose ``name`` changes replaces its base table."""
    out = dict(base)
    for key, value in child.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            renamed = "name" in value and "name" in old and value["name"] != old["name"]
            out[key] = dict(value) if renamed else _merge(old, value)
        else:
            out[key] = value
    return out


def read_recipe_file(path: str | Path, _chain: tuple = ()) -> tuple[dict, list]:
    """Read a recipe and its ``extends`` chain. Returns the merged raw dict and the files read (base first)."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise RecipeError([f"extends: cycle: {cycle}"])
    raw = _read_toml(path, _chain)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw, [path]
    if not isinstance(parent, str):
        raise RecipeError([f"extends: expected a file name (string), got {type(parent).__name__} in {path}"])
    base, files = read_recipe_file(path.parent / parent, (*_chain, path))
    return _merge(base, raw), [*files, path]


# -------------------------------------------------------------------------------------------- overrides


def parse_override_value(raw: str) -> Any:
    """Parse ``raw`` as a TOML value; anything that is not valid TOML is taken as a bare string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(raw: dict, overrides: list) -> dict:
    """Apply ``KEY=VALUE`` strings (dotted keys) to a raw recipe dict, returning a new dict.

    As with ``extends``, an override that changes a section's ``name`` replaces that section (its old settings
    belong to the old component); such overrides apply first, so their order on the command line does not matter.
    """
    out = json.loads(json.dumps(raw, default=str)) if overrides else raw
    problems = []
    renames = [o for o in overrides if o.partition("=")[0].strip().endswith(".name")]
    for item in renames + [o for o in overrides if o not in renames]:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. trainer.max_epochs=3")
            continue
        *parents, leaf = key.split(".")
        table = out
        for depth, part in enumerate(parents):
            if isinstance(table, list) and part.isdigit() and int(part) < len(table):
                table = table[int(part)]
                continue
            if not isinstance(table, dict):
                problems.append(f"--set {key}: {'.'.join(parents[:depth])} is not a table")
                break
            table = table.setdefault(part, {})
        else:
            if isinstance(table, dict):
                new = parse_override_value(value)
                if leaf == "name" and table.get("name", new) != new:
                    table.clear()
                table[leaf] = new
            elif isinstance(table, list) and leaf.isdigit() and int(leaf) < len(table):
                table[int(leaf)] = parse_override_value(value)
            else:
                problems.append(f"--set {key}: {'.'.join(parents)} is not a table")
    if problems:
        raise RecipeError(problems)
    return out


# -------------------------------------------------------------------------------------------- structuring


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


def make_converter() -> cattrs.Converter:
    """A cattrs converter that rejects unknown keys and does not coerce types (``"3"`` is not an int)."""
    converter = cattrs.Converter(forbid_extra_keys=True)
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


def nearest_hint(name: str, valid, listing: str) -> str:
    """``"; did you mean 'x'?"`` for the valid name closest to ``name``, else ``"; <listing>: a, b, ..."``."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; {listing}: {', '.join(valid)}"


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
        core_values = {}
        for key, (type_, default) in (core or {}).items():
            value = data.pop(key, default)
            if not isinstance(value, type_):
                self.problems.append(f"{path}.{key}: expected {type_.__name__}, got {value!r}")
            core_values[key] = value
        config = self.attrs_class(data, component.config, path, ("name", *(core or {})))
        return None if config is None else (name, config, core_values)


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
            made = s.component(section, "encoders", f"encoders.{modality}", {"frozen": (bool, False)})
            encoders[modality] = made and EncoderSection(made[0], made[1], made[2]["frozen"])

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


@attrs.frozen
class _Settings:
    """The non-component part of a recipe, structured by cattrs in one go."""

    optimizer: OptimizerSettings = OptimizerSettings()
    trainer: TrainerSettings = TrainerSettings()
    embed_dim: int = attrs.field(default=128, validator=_positive)
    seed: int = 0
    output_dir: str = "runs"
    name: str = ""


def load_recipe(path: str | Path, overrides: list = (), registry: Registry | None = None) -> tuple[Recipe, list]:
    """Read, merge, override and structure a recipe file. Returns the recipe and the files of its extends chain."""
    from .registry import get_registry

    raw, files = read_recipe_file(path)
    raw = apply_overrides(raw, list(overrides))
    recipe = structure_recipe(raw, registry or get_registry(), str(path))
    if not recipe.name:
        recipe = attrs.evolve(recipe, name=Path(path).stem)
    return recipe, files


# ---------------------------------------------------------------------------------------------- writing


def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as plain TOML-ready data (what ``mmcore show`` prints and run directories store)."""
    converter = make_converter()

    def section(sec: ComponentSection) -> dict:
        out = {"name": sec.name}
        if isinstance(sec, EncoderSection):
            out["frozen"] = sec.frozen
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
        "optimizer": converter.unstructure(recipe.optimizer),
        "trainer": converter.unstructure(recipe.trainer),
    }


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's escaping plus DEL, which TOML forbids raw."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + items + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dump_toml(data: dict) -> str:
    """Write recipe-shaped data (tables, arrays of tables, scalars, arrays) as TOML. ``None`` values are omitted."""
    lines: list = []

    def table(d: dict, prefix: str) -> None:
        for key, value in d.items():
            if value is not None and not isinstance(value, dict) and not _is_table_array(value):
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        for key, value in d.items():
            name = prefix + _toml_key(key)
            if isinstance(value, dict):
                lines.extend(["", f"[{name}]"])
                table(value, name + ".")
            elif _is_table_array(value):
                for item in value:
                    lines.extend(["", f"[[{name}]]"])
                    table(item, name + ".")

    table(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"
