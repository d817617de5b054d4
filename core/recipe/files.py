"""Reading recipe files: TOML, ``extends`` chains (deep-merged, a renamed section replaced) and ``--set`` overrides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from .errors import RecipeError


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

