"""The ``mmcore`` command line. torch and Lightning are imported only by the commands that need them.

Exit status: 0 success, 1 a failure while running, 2 bad input (invalid recipe, unknown component, a run directory
that already exists). Nothing is written for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def _error(message) -> int:
    """Print ``mmcore: error: MESSAGE`` and return exit status 2. ``message``: a string or an exception (a
    KeyError's message without the quotes ``str`` adds)."""
    if isinstance(message, KeyError) and message.args:
        message = message.args[0]
    print(f"mmcore: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _load(args):
    from .recipe import load_recipe

    return load_recipe(args.recipe, args.set)


def cmd_run(args) -> int:
    from .recipe import RecipeError, load_recipe
    from .runs.directory import RunDirectoryError, make_run_dir
    from .runs.train import train
    from .contracts import DataError, data_error_message
    from .train.module import NonFiniteLoss

    if bool(args.recipe) == bool(args.resume):
        return _error("give a RECIPE to start a run, or --resume RUN_DIR to continue one (not both)")
    try:
        if args.resume:
            run_dir = Path(args.resume)
            if not (run_dir / "recipe.toml").is_file():
                return _error(f"{run_dir} is not an mmcore run directory (no recipe.toml)")
            recipe, sources = load_recipe(run_dir / "recipe.toml", args.set)
        else:
            recipe, sources = _load(args)
        # every component is built (and checked) before anything is written
        built = _assembled(recipe, run_dir / "recipe.toml" if args.resume else args.recipe)
        if not args.resume:
            run_dir = make_run_dir(recipe, args.out, args.overwrite)
    except (RecipeError, RunDirectoryError) as exc:
        return _error(exc)
    except OSError as exc:
        return _error(f"cannot create the run directory: {exc}")
    print(f"mmcore: run directory {run_dir}", file=sys.stderr)
    resume_hint = f"resume with: mmcore run --resume {run_dir}"
    try:
        metrics = train(recipe, sources, run_dir, module_data=built, resume=bool(args.resume))
    except RunDirectoryError as exc:
        return _error(exc)
    except NonFiniteLoss as exc:
        print(f"mmcore: stopped: {exc}", file=sys.stderr)
        return 1
    except DataError as exc:
        print(f"mmcore: stopped: bad input data: {data_error_message(exc)}; checkpoints kept in "
              f"{run_dir / 'checkpoints'}; fix the data, then {resume_hint}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit) as exc:
        code = 143 if type(exc).__name__ == "SIGTERMException" else 130
        print(f"mmcore: interrupted; checkpoints kept in {run_dir / 'checkpoints'}; {resume_hint}", file=sys.stderr)
        return code
    from .use.report import HEATMAP_SKIPPED, declared_summary, has_retrieval, have_matplotlib, summary_keys

    _print_metrics(metrics, args.all_metrics, summary_keys(metrics, declared_summary(run_dir)))
    if have_matplotlib() and not has_retrieval(metrics, list(recipe.modalities)):
        print(f"mmcore: {HEATMAP_SKIPPED}", file=sys.stderr)
    print(f"mmcore: wrote {run_dir / 'metrics.json'}; watch with: tensorboard --logdir {run_dir}", file=sys.stderr)
    return 0


def _print_metrics(metrics: dict, everything: bool = False, summary=()) -> None:
    """Every metric, sorted (``everything``), else the ``summary`` keys present in ``metrics``, in that order (the
    run's declared summary metrics)."""
    keys = sorted(metrics) if everything else [k for k in dict.fromkeys(summary) if k in metrics]
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        print(f"{key:<{width}}  {metrics[key]:.4f}")


def _assembled(recipe, path):
    """:func:`mmcore.train.build.assemble`, its recipe errors naming the recipe file."""
    from .recipe import RecipeError
    from .train.build import assemble

    try:
        return assemble(recipe)
    except RecipeError as exc:
        if exc.source:
            raise
        raise RecipeError(exc.problems, str(path)) from exc


def cmd_validate(args) -> int:
    from .recipe import RecipeError

    try:
        recipe, _ = _load(args)
        _assembled(recipe, args.recipe)
    except RecipeError as exc:
        return _error(exc)
    print(f"{args.recipe}: ok ({recipe.anchor.name}, {len(recipe.encoders)} modalities: "
          f"{', '.join(recipe.modalities)})")
    return 0


def cmd_show(args) -> int:
    from .recipe import RecipeError, dump_toml, recipe_to_dict

    try:
        recipe, sources = _load(args)
    except RecipeError as exc:
        return _error(exc)
    print("# resolved from: " + " -> ".join(str(s) for s in sources))
    print(dump_toml(recipe_to_dict(recipe)), end="")
    return 0


def cmd_plugins(args) -> int:
    import attrs

    from .contracts import KINDS
    from .registry import get_registry

    registry = get_registry()
    if args.json:
        print(json.dumps([attrs.asdict(p) for p in registry.plugins], indent=2))
        return 0
    if args.requirements:
        for p in registry.plugins:
            name = "mmcore-framework" if p.distribution == "mmcore" else p.distribution
            print(f"{name}=={p.version}")
        return 0
    for p in registry.plugins:
        label = f"{p.distribution} {p.version}" + (" (built-in)" if p.entry_point == "(built-in)" else "")
        print(label)
        if p.entry_point != "(built-in)":
            print(f"  entry point: {p.entry_point}")
        if p.error:
            print(f"  ERROR: {p.error}")
        for kind in KINDS:
            if p.components.get(kind):
                print(f"  {kind.replace('_', ' ')}: {', '.join(sorted(p.components[kind]))}")
    for (kind, name), dists in sorted(registry.conflicts.items()):
        print(f"CONFLICT: {kind.replace('_', ' ')} {name!r} is provided by {' and '.join(dists)}; it is disabled")
    return 0


def cmd_eval(args) -> int:
    from .runs.evaluate import evaluate_run
    from .runs.load import RunLoadError

    try:
        metrics = evaluate_run(Path(args.run_dir), checkpoint=args.checkpoint, overrides=args.set)
    except RunLoadError as exc:
        return _error(exc)
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        _print_metrics(metrics, everything=True)
    return 0


def cmd_report(args) -> int:
    from .files import OutputExists, check_output
    from .use.report import HEATMAP_SKIPPED, comparison_table, has_retrieval, read_run, side_by_side_heatmaps

    runs = []
    for run_dir in args.run_dirs:
        path = Path(run_dir)
        if not (path / "metrics.json").is_file() or not (path / "recipe.toml").is_file():
            return _error(f"{path} is not a finished mmcore run (no metrics.json / recipe.toml)")
        runs.append(read_run(path))
    print(comparison_table(runs))
    out = Path(args.out) if args.out else _fresh_path(Path("mmcore-report"), ".png")
    try:
        check_output(out, args.overwrite)
    except OutputExists as exc:
        return _error(exc)
    without = [run["dir"].name for run in runs if not has_retrieval(run["metrics"], run["modalities"])]
    if without:
        print(f"mmcore: {', '.join(without)}: {HEATMAP_SKIPPED}", file=sys.stderr)
    if len(without) == len(runs):
        return 0
    written = side_by_side_heatmaps(runs, out)
    print(f"heat maps: {written}" if written else "heat maps skipped: pip install matplotlib", file=sys.stderr)
    return 0


def _load_model(run_dir: str):
    from .runs.load import load

    return load(run_dir)


def _use_errors():
    from .use.deploy import OutputExists
    from .runs.load import RunLoadError

    return (OutputExists, RunLoadError, FileNotFoundError, ValueError, KeyError)


def cmd_embed(args) -> int:
    from .use.deploy import embed_file

    try:
        out = embed_file(_load_model(args.run_dir), args.modality, Path(args.input), Path(args.out),
                         args.batch_size, args.overwrite)
    except _use_errors() as exc:
        return _error(exc)
    print(f"{args.out}: {out.shape[0]} x {out.shape[1]} embeddings of {args.modality}", file=sys.stderr)
    return 0


def cmd_index(args) -> int:
    from .use.deploy import build_index_dir

    try:
        meta = build_index_dir(_load_model(args.run_dir), args.modality, Path(args.input), Path(args.out),
                               args.factory, args.nprobe, Path(args.ids) if args.ids else None, args.batch_size,
                               args.overwrite)
    except _use_errors() as exc:
        return _error(exc)
    print(json.dumps(meta, indent=2))
    return 0


def cmd_search(args) -> int:
    import numpy as np

    from .use.deploy import search_index

    from .use.deploy import item_names

    try:
        model = _load_model(args.run)
        queries = Path(args.queries)
        spec = model.inputs.get(args.modality)
        if spec is not None and spec.media == "text" and not queries.exists():
            queries = [args.queries]  # a typed query: `mmcore search INDEX --run RUN --modality text "a dog barking"`
        ids, scores = search_index(Path(args.index_dir), model, args.modality, queries, args.k, args.batch_size)
        names = item_names(Path(args.index_dir))
    except _use_errors() as exc:
        return _error(exc)
    if args.out:
        if Path(args.out).exists() and not args.overwrite:
            return _error(f"{args.out} already exists; pass --overwrite or choose another --out")
        np.savez(args.out, ids=ids, scores=scores)
    else:
        for i, (row_ids, row_scores) in enumerate(zip(ids, scores)):
            found = [names[j] if names is not None and 0 <= j < len(names) else j for j in row_ids]
            print(f"{i}\t" + "\t".join(f"{j}:{v:.4f}" for j, v in zip(found, row_scores)))
    return 0


def cmd_export(args) -> int:
    from .use.deploy import export_encoders

    try:
        files = export_encoders(_load_model(args.run_dir), args.format, Path(args.out), args.overwrite)
    except ImportError as exc:
        return _error(f"--format {args.format} needs an extra package: {exc.name or exc} (pip install it)")
    except _use_errors() as exc:
        return _error(exc)
    for path in files:
        print(path)
    return 0


def cmd_new_plugin(args) -> int:
    from .scaffold import new_plugin

    try:
        root = new_plugin(args.name, args.kind, Path(args.out))
    except (ValueError, FileExistsError) as exc:
        return _error(exc)
    print(f"wrote {root}\nnext: pip install -e {root} && python -m pytest {root / 'tests'}")
    return 0


def _fresh_path(stem: Path, suffix: str) -> Path:
    n = 1
    while Path(f"{stem}-{n}{suffix}").exists():
        n += 1
    return Path(f"{stem}-{n}{suffix}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmcore", description="Train and evaluate unified multimodal embedding spaces from TOML recipes.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def recipe_command(name: str, help_text: str):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("recipe", help="recipe file (TOML)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe value, e.g. --set trainer.max_epochs=3 (repeatable; VALUE is TOML)")
        return p

    p = sub.add_parser("run", help="train a recipe, evaluate it and write a run directory",
                       description="train a recipe, evaluate it and write a run directory")
    p.add_argument("recipe", nargs="?", help="recipe file (TOML)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set trainer.max_epochs=3 (repeatable; VALUE is TOML)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from its last checkpoint (optimizer, schedule, RNG, epoch)")
    p.add_argument("--out", help="run directory (default: <output_dir>/<recipe name>-<n>, always fresh)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it already holds a run")
    p.add_argument("--all-metrics", action="store_true", help="print every metric, not only the summaries")
    p.set_defaults(func=cmd_run)

    recipe_command("validate", "check a recipe (and build its components) without training").set_defaults(
        func=cmd_validate)
    recipe_command("show", "print the fully resolved recipe (extends and --set applied)").set_defaults(func=cmd_show)

    p = sub.add_parser("plugins", help="list installed plugin distributions and their components")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--requirements", action="store_true", help="print name==version lines")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("eval", help="re-run a trained run's evaluators on its checkpoint")
    p.add_argument("run_dir", help="a run directory written by `mmcore run`")
    p.add_argument("--checkpoint", default="last.ckpt", help="file name under RUN_DIR/checkpoints")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.add_argument("--set", action="append", default=[], metavar="dataset.KEY=VALUE",
                   help="change a dataset setting of the run's recipe, e.g. --set dataset.path=NEW_DIR when the "
                        "data moved (repeatable; only dataset.* keys)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="compare runs: a table of summary metrics and their Recall@1 heat maps")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="PNG of the heat maps side by side (default: a fresh mmcore-report-<n>.png)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_report)

    def use_command(name: str, help_text: str, input_help: str | None = (
            "INPUT.npy: [rows, *input shape] array (read as a memory map); for raw media: a folder of files, a "
            "manifest (.csv/.jsonl/.parquet, the modality's column), a .txt of texts (one per line) or one file")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `mmcore run`")
        p.add_argument("--modality", required=True, help="which encoder to use")
        if input_help:
            p.add_argument("input", metavar="INPUT", help=input_help)
        p.add_argument("--out", required=True)
        p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
        p.add_argument("--batch-size", type=int, default=4096)
        return p

    use_command("embed", "embed an array of one modality into the run's shared space (.npy out)").set_defaults(
        func=cmd_embed)
    p = use_command("index", "embed an array and build a faiss index directory of it")
    p.add_argument("--factory", default="Flat", help='faiss index factory string: "Flat" (exact, default), '
                   '"IVF4096,Flat", "HNSW32,Flat", ...; approximate ones report their recall against exact')
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists searched per query")
    p.add_argument("--ids", help="IDS.npy: one id per row (default: row numbers)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an index with queries of any modality of the run")
    p.add_argument("index_dir", metavar="INDEX_DIR")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="the run whose encoder embeds the queries")
    p.add_argument("--modality", required=True, help="modality of the queries")
    p.add_argument("queries", metavar="QUERIES", help="QUERY.npy, raw media as for `embed`, or for a raw-text "
                   'modality the query itself: "a dog barking"')
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--out", help="write ids and scores to an .npz instead of printing them")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--batch-size", type=int, default=4096)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("export", help="write the encoders so they run without mmcore installed")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", choices=["torchscript", "onnx", "safetensors"], default="torchscript")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)

    from .scaffold import KIND_CHOICES

    p = sub.add_parser("new-plugin", help="write a ready plugin package (entry point, component, test, README)")
    p.add_argument("name", help="component name, e.g. my_loss (the package becomes mmcore-my-loss)")
    p.add_argument("--kind", choices=KIND_CHOICES, default="encoder")
    p.add_argument("--out", default=".", help="parent directory (default: here)")
    p.set_defaults(func=cmd_new_plugin)
    _plugin_commands(sub)
    return parser


def _plugin_commands(sub) -> None:
    """Let plugins add subcommands; a plugin whose hook fails is reported and skipped."""
    from .registry import get_registry

    for record, add_commands in get_registry().command_hooks:
        try:
            add_commands(subparsers=sub)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the CLI down
            print(f"mmcore: warning: plugin {record.distribution} failed to add its commands: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `mmcore search ... | head`: the reader left; not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
