"""``mmcore shard RECIPE --out DIR``: write the dataset of a recipe's ``[dataset]`` section as shards.

Any installed dataset (``features``, ``manifest``, ``mfeat``, ``synthetic``, a ``mixture``...) is built exactly as
``mmcore run`` builds it (``--set`` overrides included; the recipe's seed fixes its split), and each split's items are
written into ``DIR/<split>/`` (litdata shards of about ``--shard-bytes`` each; val and test in order, train in a
random order from the recipe's seed, :func:`mmcore_shards.writer.write_shards`), with ``mmcore-shards.json`` last
(:mod:`mmcore_shards.layout`). Train on them with ``[dataset] name = "shards"``, ``path = "DIR"``.

``DIR`` must not exist, or be empty; everything is written into a temporary folder beside it that becomes ``DIR``
in one rename when done, so a failed or interrupted write (Ctrl-C, SIGTERM) leaves nothing. Exit status: 0 written;
2 bad input (a recipe error, an existing ``DIR``, litdata missing), nothing written; 130 / 143 interrupted.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

EXIT_BAD_INPUT = 2


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "shard", help="write a recipe's dataset as shards, for the streaming `shards` dataset",
        description="Build the dataset of RECIPE's [dataset] section as `mmcore run` would and write its train, "
                    "val and test splits as litdata shards into --out, with mmcore-shards.json. Train on them "
                    "with [dataset] name = \"shards\", path = \"<--out>\".")
    p.add_argument("recipe", help="recipe file whose [dataset] section is written (the other sections are not used)")
    p.add_argument("--out", required=True, help="output directory (must not exist, or be empty)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, as for `mmcore run` (repeatable)")
    p.add_argument("--shard-bytes", default="auto",
                   help="about how large each shard is (litdata's chunk_bytes: 64MB, 256MB, ...); default auto: "
                        "about 32 shards a split, each 256KB to 64MB (shards are the unit litdata shuffles)")
    p.set_defaults(func=handle)


def _error(message) -> int:
    print(f"mmcore: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def handle(args) -> int:
    """Write the shards; SIGTERM and Ctrl-C stop it with nothing written (the temporary folder is removed)."""
    previous = signal.signal(signal.SIGTERM, _terminated)  # litdata, once imported, would otherwise swallow it
    try:
        return _write(args)
    except (KeyboardInterrupt, _Terminated) as exc:
        print(f"mmcore: interrupted; nothing written to {args.out}", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write(args) -> int:
    import mmcore

    out = Path(args.out)
    if out.is_symlink():
        return _error(f"--out {out} is a symbolic link; name the folder itself")
    if out.exists() and not out.is_dir():
        return _error(f"--out {out} exists and is not a folder")
    try:
        mmcore.check_output(out, empty_dir_ok=True)
    except mmcore.OutputExists:
        return _error(f"--out {out} exists and is not empty; choose a new folder")
    try:
        recipe, _ = mmcore.load_recipe(args.recipe, args.set)
    except mmcore.RecipeError as exc:
        return _error(exc)
    try:
        import litdata  # noqa: F401
        import litdata.streaming.writer  # noqa: F401  (imported here, before anything is written)
        import safetensors  # noqa: F401
    except ImportError as exc:
        return _error(f"writing shards needs litdata ({exc}): pip install 'mmcore-shards[litdata]'")
    registry = mmcore.get_registry()
    context = mmcore.DatasetContext(recipe.seed, tuple(recipe.modalities))
    try:
        splits = registry.build("datasets", recipe.dataset.name, recipe.dataset.config, context, "dataset")
    except Exception as exc:  # the registry's build error: one line per problem, at the recipe path
        problems = getattr(exc, "problems", None)
        if problems is None:
            raise
        return _error(mmcore.RecipeError(problems, str(args.recipe)))
    from .writer import write_shards

    source = {"recipe": str(args.recipe), "dataset": recipe.dataset.name, "overrides": list(args.set),
              "seed": recipe.seed}
    started = time.perf_counter()
    progress = _Progress()
    made_empty = out.exists()
    try:
        if made_empty:
            out.rmdir()  # empty (checked above); made again by the rename
        with mmcore.atomic_output(out, directory=True) as tmp:
            description = write_shards(splits, Path(tmp), args.shard_bytes, source, progress, seed=recipe.seed)
    except BaseException:
        if made_empty:
            out.mkdir(exist_ok=True)  # the empty folder the user made, as it was
        progress.close()
        raise
    progress.close()
    seconds = time.perf_counter() - started
    for name, entry in description["splits"].items():
        size = sum(shard["bytes"] for shard in entry["shards"].values())
        print(f"{name}: {entry['samples']} samples in {len(entry['shards'])} shards ({size / 1e6:.1f} MB)")
    total = sum(entry["samples"] for entry in description["splits"].values())
    print(f"mmcore: wrote {out} ({total} samples in {seconds:.1f} s); train on it with [dataset] name = \"shards\", "
          f"path = \"{out}\"", file=sys.stderr)
    return 0


class _Terminated(BaseException):
    """SIGTERM while writing (raised in the main thread, so the temporary folder is removed on the way out). A
    BaseException, as KeyboardInterrupt is: libraries' ``except Exception`` (an optional import that "failed")
    would otherwise swallow it and the write would go on."""


def _terminated(signum, frame):
    raise _Terminated()


class _Progress:
    """A line on stderr per thousand items (none when stderr is not a terminal)."""

    def __init__(self):
        self.tty = sys.stderr.isatty()

    def __call__(self, split: str, done: int) -> None:
        if self.tty and done % 1000 == 0:
            print(f"\r{split}: {done} samples", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)
