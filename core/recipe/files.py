"""Reading recipe files: TOML, ``extends`` chains (deep-merged, a renamed section replaced) and ``--set`` overrides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from ..files import read_regular
from .errors import RecipeError
from .schema import is_utf8


MAX_RECIPE_BYTES = 4 << 20
"""The largest recipe file read (4 MiB; real recipes are a few KiB): ``/dev/zero`` or a huge file is refused, not read."""

MAX_DEPTH = 32
"""The deepest nesting of tables and arrays a recipe (or a ``--set`` key and value) may have; real recipes nest 4
levels. Deeper data would exhaust the parsers' and structurers' recursion."""

def read_bounded(path: Path) -> bytes:
    """The bytes of the regular recipe file ``path``, at most :data:`MAX_RECIPE_BYTES` (:func:`mmcore.read_regular`:
    a FIFO, which would block, or a device such as ``/dev/zero``, which never ends, is refused before it is read).
    Raises ValueError (the reason) for those and for a file too large, OSError (IsADirectoryError,
    FileNotFoundError, ...) when it cannot be read."""
    if Path(path).is_dir():
        raise IsADirectoryError(path)
    return read_regular(path, MAX_RECIPE_BYTES, "a recipe")


def _depth(value: Any) -> int:
    """How deeply tables and arrays nest in ``value`` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        if depth + 1 > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep(what: str) -> RecipeError:
    return RecipeError([f"{what}: nested too deeply (tables and arrays at most {MAX_DEPTH} levels deep)"])


def _read_toml(path: Path, chain: tuple) -> dict:
    where = " (extended from " + " -> ".join(str(p) for p in chain) + ")" if chain else ""
    if not is_utf8(str(path)):
        raise RecipeError([f"{str(path)!r}: the file name is not valid UTF-8 (the run records it); rename the file"
                           f"{where}"])
    try:
        data = read_bounded(path)
    except FileNotFoundError:
        raise RecipeError([f"extends: file not found: {path}{where}" if chain else f"file not found: {path}"])
    except IsADirectoryError:
        raise RecipeError([f"not a file: {path}{where}"])
    except ValueError as exc:
        raise RecipeError([f"{'extends: ' if chain else ''}{path}: {exc}{where}"])
    except OSError as exc:
        raise RecipeError([f"{'extends: ' if chain else ''}{path}: cannot read it: {exc.strerror or exc}{where}"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError([f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})"])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"{path}: not valid TOML: {exc}"])
    except RecursionError:
        raise _too_deep(str(path)) from None
    if _depth(data) > MAX_DEPTH:
        raise _too_deep(str(path))
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
    try:
        path = Path(path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop; a NUL in the name
        raise RecipeError([f"{'extends: ' if _chain else ''}{str(path)!r}: not a usable file name: {exc}"]) from None
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise RecipeError([f"extends: cycle: {cycle}"])
    if len(_chain) >= MAX_DEPTH:
        raise RecipeError([f"extends: a chain of more than {MAX_DEPTH} files, from {_chain[0]}"])
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
    """Parse ``raw`` as a TOML value; a bare word that is not valid TOML is taken as a string (``image``).

    Refused (ValueError, with the reason): a value that parses to more than one key (``1\nx = 2``: a newline
    would otherwise cut it silently), a bare string spanning lines, a value that starts like an array, table or
    quoted string but is not one (``[1,``: it would otherwise become a string, reported once per character), and
    a value nested deeper than :data:`MAX_DEPTH`."""
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError as exc:
        if raw.lstrip()[:1] in ("[", "{", '"', "'"):
            raise ValueError(f"not a valid TOML value: {exc}") from None
        if "\n" in raw or "\r" in raw:
            raise ValueError("a bare (unquoted) value cannot span lines; quote it as a TOML string") from None
        return raw
    except RecursionError:
        raise ValueError(f"nested too deeply (at most {MAX_DEPTH} levels)") from None
    if set(parsed) != {"v"}:
        raise ValueError("one TOML value expected, got more (a newline in the value?)")
    if _depth(parsed["v"]) > MAX_DEPTH:
        raise ValueError(f"nested too deeply (at most {MAX_DEPTH} levels)")
    return parsed["v"]


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _key_parts(key: str) -> list | None:
    """The parts of a dotted ``--set`` key, read as TOML reads a key (``dataset.modalities."image".noise`` is
    ``dataset``, ``modalities``, ``image``, ``noise``: the quotes are TOML's, a quoted part may hold a dot); None
    when it is not a valid TOML key."""
    if '"' not in key and "'" not in key:
        return key.split(".")
    try:
        node = tomllib.loads(f"{key} = 0")
    except (tomllib.TOMLDecodeError, RecursionError):
        return None
    parts = []
    while isinstance(node, dict) and len(node) == 1:
        part, node = next(iter(node.items()))
        parts.append(part)
    return parts if node == 0 and parts else None


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
        if not is_utf8(item):
            problems.append(f"--set {item!r}: not valid UTF-8 (a recipe is UTF-8 text)")
            continue
        try:
            new = parse_override_value(value)
        except ValueError as exc:
            problems.append(f"--set {_short(key)}={_short(value)!r}: {exc}")
            continue
        if key.count(".") + 1 + _depth(new) > MAX_DEPTH:
            problems.append(f"--set {_short(key)}: nested too deeply (key and value at most {MAX_DEPTH} levels deep)")
            continue
        parts = _key_parts(key)
        if parts is None:
            problems.append(f"--set {_short(key)}: not a valid TOML key (quote a part that holds a dot: "
                            'encoders."my.modality".name)')
            continue
        *parents, leaf = parts
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
                if leaf == "name" and table.get("name", new) != new:
                    table.clear()
                table[leaf] = new
            elif isinstance(table, list) and leaf.isdigit() and int(leaf) < len(table):
                table[int(leaf)] = new
            else:
                problems.append(f"--set {key}: {'.'.join(parents)} is not a table")
    if problems:
        raise RecipeError(problems)
    return out

