"""Dataset ``shards`` (a directory written by ``mmcore shard``, streamed) and the ``mmcore shard`` command.

The recipe check (``mmcore validate``) reads the description and checks every shard's size against the one written
(a truncated or missing shard would otherwise make litdata wait for it); ``verify = "checksum"`` also compares
each shard's SHA-256 (reads every shard once). A bad shard is a recipe error naming the file, unless
``bad_shards = "skip"``: then it is left out, and a warning names each one and counts the samples lost.
"""

from __future__ import annotations

import logging
from pathlib import Path

import attrs

import mmcore

from .layout import SPLITS, ShardsError, read_description, shard_problems

log = logging.getLogger("mmcore.shards")
INSTALL = "pip install 'mmcore-shards[litdata]'"


def _one_of(*choices):
    def check(instance, attribute, value):
        if value not in choices:
            raise ValueError(f"{attribute.name!r} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return check


@attrs.frozen
class ShardsConfig:
    """``path``: the directory ``mmcore shard`` wrote; ``verify``: ``"size"`` (every shard's size, at build) or
    ``"checksum"`` (also its SHA-256: reads every shard once); ``bad_shards``: ``"error"`` (a bad shard is a recipe
    error) or ``"skip"`` (left out, named and counted in a warning)."""

    path: str
    verify: str = attrs.field(default="size", validator=_one_of("size", "checksum"))
    bad_shards: str = attrs.field(default="error", validator=_one_of("error", "skip"))


def samples_in(entry: dict, shards) -> int:
    """How many samples the named ``shards`` of one split's description ``entry`` hold."""
    return sum(entry["shards"][name]["samples"] for name in shards)


def checked_splits(config: ShardsConfig) -> tuple:
    """``(description, {split: set of shards left out})``; raises :class:`mmcore.ConfigError` naming the file."""
    root = Path(config.path)
    try:
        description = read_description(root)
    except ShardsError as exc:
        raise mmcore.ConfigError("path", str(exc)) from None
    left_out = {}
    for split in SPLITS:
        entry = description["splits"][split]
        if not (root / split / "index.json").is_file():
            raise mmcore.ConfigError("path", f"{root / split / 'index.json'}: missing")
        problems = shard_problems(root / split, entry["shards"], config.verify == "checksum")
        if problems and config.bad_shards == "error":
            name, reason = next(iter(problems.items()))
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise mmcore.ConfigError("path", f"{root / split / name}: bad shard: {reason}{more}; "
                                             "bad_shards = \"skip\" leaves bad shards out")
        lost = samples_in(entry, problems)
        if lost >= entry["samples"]:
            raise mmcore.ConfigError("path", f"{root / split}: every shard is bad ({len(problems)}); nothing to read")
        for name, reason in problems.items():
            log.warning("skipped bad shard %s: %s", root / split / name, reason)
        if problems:
            log.warning("%s: %d bad shard(s) skipped, %d of %d samples left out", root / split, len(problems),
                        lost, entry["samples"])
        left_out[split] = set(problems)
    return description, left_out


def build_shards(config: ShardsConfig, context=None):
    try:  # before the shards are checked (with checksums, every shard is read)
        import litdata  # noqa: F401
        import safetensors  # noqa: F401

        from .reader import ShardSplit, view_without
    except ImportError as exc:
        raise mmcore.ConfigError("path", f"reading shards needs litdata ({exc}): {INSTALL}") from None
    description, left_out = checked_splits(config)
    root = Path(config.path)
    inputs = {m: mmcore.InputSpec.from_dict(spec) for m, spec in description["inputs"].items()}
    parts = {}
    for split in SPLITS:
        entry = description["splits"][split]
        directory = root / split
        samples = entry["samples"]
        if left_out[split]:
            directory = view_without(directory, left_out[split])
            samples -= samples_in(entry, left_out[split])
        parts[split] = ShardSplit(directory, samples)
    return mmcore.DatasetSplits(
        train=parts["train"], val=parts["val"], test=parts["test"], inputs=inputs,
        observed_pairs=frozenset(frozenset(pair) for pair in description.get("observed_pairs", [])),
        class_names=tuple(description.get("class_names", ())), prompts=tuple(description.get("prompts", ())),
    )


@mmcore.hookimpl
def mmcore_datasets():
    return [mmcore.Component("shards", ShardsConfig, build_shards,
                             "any dataset written as shards by `mmcore shard`, streamed (ranks, workers, resume)")]


@mmcore.hookimpl
def mmcore_commands(subparsers):
    from .command import add_parser

    add_parser(subparsers)
