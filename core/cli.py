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
    """``mmcore run``. Everything is checked before anything is written: the recipe, its components (built and
    probed), the trainer settings, ``--out`` (an existing run is replaced only with ``--overwrite``, only once the
    new run has started) and, for ``--resume``, the changes ``--set`` makes and the checkpoint to continue from."""
    if args.seeds is not None or args.sweep or args.seed_key:
        return cmd_study(args)  # its plan refuses --seed-key without --seeds
    from .recipe import RecipeError, load_recipe, recipe_to_dict
    from .runs.directory import (RunDirectoryError, check_replaceable, launcher_rank, lock_run_dir, make_run_dir,
                                 refused_resume_changes, restore, set_aside, unlock_run_dir)

    if bool(args.recipe) == bool(args.resume):
        return _error("give a RECIPE to start a run, or --resume RUN_DIR to continue one (not both)")
    if args.resume and (args.out or args.overwrite):
        return _error("--resume continues RUN_DIR in place; --out and --overwrite do not apply to it")
    leader = launcher_rank() == 0  # DDP children re-run this command: rank 0 alone checks, locks and replaces
    replaced = aside = resume_from = run_dir = None
    try:
        if args.resume:
            run_dir = Path(args.resume)
            if not (run_dir / "recipe.toml").is_file():
                return _error(f"{run_dir} is not an mmcore run directory (no recipe.toml)")
            if leader:
                lock_run_dir(run_dir)
            recipe, sources = load_recipe(run_dir / "recipe.toml", args.set)
            stored = load_recipe(run_dir / "recipe.toml")[0] if args.set else recipe
            refused = refused_resume_changes(recipe_to_dict(stored), recipe_to_dict(recipe))
            if refused:
                raise RunDirectoryError(
                    "--resume cannot change what the checkpoint depends on or continues: " + "; ".join(refused)
                    + f"; start a new run instead: mmcore run {run_dir / 'recipe.toml'} --set ... --out NEW_DIR")
        else:
            if args.out is not None and leader:
                replaced = check_replaceable(args.out, args.overwrite)  # before the slow part: a typo'd --out
            recipe, sources = _load(args)
        # every component is built (and checked) before anything is written
        built = _assembled(recipe, run_dir / "recipe.toml" if args.resume else args.recipe)
        if args.resume:
            from .runs.checkpoints import resume_checkpoint

            resume_from, note = resume_checkpoint(run_dir)
            if note:
                print(f"mmcore: {note}", file=sys.stderr)
        else:
            aside = set_aside(replaced) if replaced is not None else None
            try:
                run_dir = make_run_dir(recipe, args.out)
                if leader:
                    lock_run_dir(run_dir)
            except BaseException:
                if aside is not None:
                    restore(aside, replaced)
                raise
    except (RecipeError, RunDirectoryError, OSError) as exc:
        if run_dir is not None:
            unlock_run_dir(run_dir)
        return _error(exc if not isinstance(exc, OSError) else f"cannot create the run directory: {exc}")
    if aside is not None:
        print(f"mmcore: replacing the run in {run_dir} (the old one is kept as {aside.name} until training "
              "starts)", file=sys.stderr)
    from .runs.directory import HandOver

    handover = HandOver(aside)
    try:
        return _train_and_report(args, recipe, sources, run_dir, built, resume_from, handover)
    finally:
        handover.settle(run_dir)
        unlock_run_dir(run_dir)


def _train_and_report(args, recipe, sources, run_dir, built, resume_from, handover) -> int:
    """``mmcore run`` once everything is checked: train into ``run_dir``, print the summary metrics."""
    from .contracts import DataError, data_error_message
    from .runs.directory import RunDirectoryError
    from .runs.train import train
    from .train.module import NonFiniteLoss

    print(f"mmcore: run directory {run_dir}", file=sys.stderr)
    resume_hint = f"resume with: mmcore run --resume {run_dir}"
    try:
        metrics = train(recipe, sources, run_dir, module_data=built, resume=resume_from or False,
                        callbacks=handover.callbacks())
    except RunDirectoryError as exc:
        return _error(exc)
    except NonFiniteLoss as exc:
        print(f"mmcore: stopped: {exc}", file=sys.stderr)
        return 1
    except DataError as exc:
        print(f"mmcore: stopped: bad input data: {data_error_message(exc)}; "
              f"{_after_stop(run_dir, resume_hint, 'fix the data, then ')}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit) as exc:
        code = 143 if type(exc).__name__ == "SIGTERMException" else 130
        print(f"mmcore: interrupted; {_after_stop(run_dir, resume_hint)}", file=sys.stderr)
        return code
    except OSError as exc:  # a full disk, an I/O error, a file that vanished: not a bug, no traceback
        what = exc.strerror or data_error_message(exc) or type(exc).__name__  # no DataLoader worker traceback
        print(f"mmcore: stopped: {what}{f' ({exc.filename})' if exc.filename else ''}; "
              f"{_after_stop(run_dir, resume_hint, 'fix that, then ')}", file=sys.stderr)
        return 1
    except Exception:  # a bug: its traceback, then how to go on
        import traceback

        traceback.print_exc()
        print(f"mmcore: stopped by an unexpected error (a bug: please report it with the traceback above); "
              f"{_after_stop(run_dir, resume_hint)}", file=sys.stderr)
        return 1
    from .use.report import HEATMAP_SKIPPED, declared_summary, has_retrieval, have_matplotlib, summary_keys

    _print_metrics(metrics, args.all_metrics, summary_keys(metrics, declared_summary(run_dir)))
    if have_matplotlib() and not has_retrieval(metrics, list(recipe.modalities)):
        print(f"mmcore: {HEATMAP_SKIPPED}", file=sys.stderr)
    print(f"mmcore: wrote {run_dir / 'metrics.json'}; watch with: tensorboard --logdir {run_dir.parent} (this run is "
          f"{run_dir.name}/tb there, next to the others)", file=sys.stderr)
    return 0


def cmd_study(args) -> int:
    """``mmcore run RECIPE --seeds ... --sweep KEY=V1,V2 ...`` (:mod:`mmcore.runs.study`). Everything is checked
    before anything is written: ``--seeds``, ``--sweep``, ``--out``, and every run's recipe as ``mmcore run``
    checks it (structured, trainer settings, components built and probed). Then each run trains into its own
    directory of the study as ``mmcore run`` would (the same output), and the summary is rewritten after each.
    A run that fails or is interrupted stops the study with that run's exit status; the finished runs, the stopped
    run's directory (its checkpoints and resume hint) and the summary of the finished runs stay."""
    from .recipe import RecipeError, load_recipe
    from .runs import study
    from .runs.directory import HandOver, RunDirectoryError, lock_run_dir, make_run_dir, unlock_run_dir

    if not args.recipe or args.resume:
        return _error("--seeds and --sweep start a study from a RECIPE; they do not apply to --resume")
    if args.overwrite:
        return _error("--overwrite does not apply to a study (--seeds/--sweep): it never replaces anything; "
                      "choose a fresh --out")
    try:
        seeds = study.parse_seeds(args.seeds) if args.seeds is not None else None
        runs = study.plan_study(seeds, [study.parse_sweep(item) for item in args.sweep], args.set, args.seed_key)
        if args.out is not None:
            study.check_study_out(args.out)
    except study.StudyError as exc:
        return _error(exc)
    from .registry import get_registry

    shared = study.SharedDatasets(get_registry())
    recipes = []
    for run in runs:  # every run's recipe and components, before anything is written
        try:
            recipe, sources = load_recipe(args.recipe, [*args.set, *run.overrides])
            problem = study.one_process_problem(recipe)
            if problem:
                raise RecipeError([problem], str(args.recipe))
            _assembled(recipe, args.recipe, shared)
        except RecipeError as exc:
            return _error(f"study run {run.name}: {exc}")
        recipes.append((recipe, sources))
    try:
        study_dir = study.make_study_dir(recipes[0][0], args.out)
    except OSError as exc:
        return _error(f"cannot create the study directory: {exc}")
    name = recipes[0][0].name
    finished, stopped = {}, None
    study.write_summary(study_dir, study.summarize(runs, finished, name))
    print(f"mmcore: study directory {study_dir}: {len(runs)} runs ({', '.join(run.name for run in runs)})",
          file=sys.stderr)
    for i, (run, (recipe, sources)) in enumerate(zip(runs, recipes), 1):
        print(f"mmcore: study run {i}/{len(runs)}: {run.name}", file=sys.stderr)
        run_dir = None
        try:
            built = _assembled(recipe, args.recipe, shared)  # as checked above; rebuilt so each run starts fresh
            run_dir = make_run_dir(recipe, study_dir / run.name)
            lock_run_dir(run_dir)
            code = _train_and_report(args, recipe, sources, run_dir, built, None, HandOver(None))
        except (RecipeError, RunDirectoryError, OSError) as exc:
            code = _error(exc if not isinstance(exc, OSError) else f"cannot create the run directory: {exc}")
        except KeyboardInterrupt:  # between two runs' training
            print("mmcore: interrupted", file=sys.stderr)
            code = 130
        finally:
            built = None
            if run_dir is not None:
                unlock_run_dir(run_dir)
        if code:
            stopped = {"run": run.name, "exit_status": code}
            break
        from .use.report import declared_summary, summary_keys

        metrics = json.loads((run_dir / "metrics.json").read_text())
        finished[run.name] = (metrics, sorted(metrics) if args.all_metrics else
                              summary_keys(metrics, declared_summary(run_dir)))
        study.write_summary(study_dir, study.summarize(runs, finished, name))
    summary = study.summarize(runs, finished, name, stopped)
    study.write_summary(study_dir, summary)
    at = "" if stopped is None else f"; stopped at {stopped['run']}"
    print(f"mmcore: study summary ({len(finished)} of {len(runs)} runs{at}):", file=sys.stderr)
    study.print_summary(summary)
    print(f"mmcore: wrote {study_dir / 'summary.json'} and summary.md", file=sys.stderr)
    return 0 if stopped is None else stopped["exit_status"]


def _after_stop(run_dir: Path, resume_hint: str, then: str = "") -> str:
    """What a stopped run leaves: its checkpoints and ``resume_hint`` (prefixed with ``then``), or, when it wrote
    no whole checkpoint, that there is nothing to resume: the hint printed is never one ``--resume`` refuses."""
    from .runs.checkpoints import resume_checkpoint
    from .runs.directory import RunDirectoryError

    try:
        resume_checkpoint(run_dir)
    except (RunDirectoryError, OSError):
        return f"no checkpoint was written, so there is nothing to resume: {then}start the run again"
    return f"checkpoints kept in {run_dir / 'checkpoints'}; {then}{resume_hint}"


def _print_metrics(metrics: dict, everything: bool = False, summary=()) -> None:
    """Every metric, sorted (``everything``), else the ``summary`` keys present in ``metrics``, in that order (the
    run's declared summary metrics)."""
    keys = sorted(metrics) if everything else [k for k in dict.fromkeys(summary) if k in metrics]
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        print(f"{key:<{width}}  {metrics[key]:.4f}")


def _assembled(recipe, path, registry=None):
    """:func:`mmcore.train.settings.check_trainer` (Lightning accepts ``[trainer]`` here), then
    :func:`mmcore.train.build.assemble` (with ``registry``, default the process's); their recipe errors name the
    recipe file. ``validate`` and ``run`` both call it before anything is written."""
    from .recipe import RecipeError
    from .train.build import assemble
    from .train.settings import check_trainer

    try:
        check_trainer(recipe)
        return assemble(recipe, registry)
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
        if p.commands:
            print(f"  commands: {', '.join(p.commands)}")
    for (kind, name), dists in sorted(registry.conflicts.items()):
        print(f"CONFLICT: {kind.replace('_', ' ')} {name!r} is provided by {' and '.join(dists)}; it is disabled")
    return 0


def cmd_eval(args) -> int:
    from .runs.evaluate import evaluate_run

    def work() -> int:
        metrics = evaluate_run(Path(args.run_dir), checkpoint=args.checkpoint, overrides=args.set)
        if args.json:
            print(json.dumps(metrics, indent=2, sort_keys=True))
        else:
            _print_metrics(metrics, everything=True)
        return 0

    return _use_command(work)


def cmd_report(args) -> int:
    from .use.report import (HEATMAP_SKIPPED, comparison_table, has_retrieval, read_run, report_out_problem,
                             side_by_side_heatmaps)

    out = Path(args.out) if args.out else _fresh_path(Path("mmcore-report"), ".png")
    problem = report_out_problem(out, args.overwrite)  # before any work: a late savefig error would be a traceback
    if problem:
        return _error(problem)
    runs = []
    for run_dir in args.run_dirs:
        path = Path(run_dir)
        if not (path / "metrics.json").is_file() or not (path / "recipe.toml").is_file():
            return _error(f"{path} is not a finished mmcore run (no metrics.json / recipe.toml)")
        try:
            runs.append(read_run(path))
            table = comparison_table(runs)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(f"{path}: cannot read this run's metrics.json / recipe.toml / pairs.json / model.json "
                          f"({type(exc).__name__}: {exc})")
    print(table)
    without = [run["dir"].name for run in runs if not has_retrieval(run["metrics"], run["modalities"])]
    if without:
        print(f"mmcore: {', '.join(without)}: {HEATMAP_SKIPPED}", file=sys.stderr)
    if len(without) == len(runs):
        return 0
    try:
        written = side_by_side_heatmaps(runs, out)
    except OSError as exc:  # e.g. a folder without write permission: nothing was written
        return _error(f"--out {out}: cannot write it ({exc.strerror or exc})")
    print(f"heat maps: {written}" if written else "heat maps skipped: pip install matplotlib", file=sys.stderr)
    return 0


def _load_model(run_dir: str, checkpoint: str = "last"):
    from .runs.load import load

    return load(run_dir, checkpoint)


def _use_errors():
    from .use.deploy import OutputExists
    from .runs.load import RunLoadError

    return (OutputExists, RunLoadError, FileNotFoundError, ValueError, KeyError)


class _Terminated(BaseException):
    """SIGTERM during a use command, raised so that its temporary output is removed on the way out."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def _use_command(work) -> int:
    """Run a use command's ``work()`` (eval, embed, index, search, export) -> its exit status. Bad input: exit 2
    and ``mmcore: error: ...``; a full disk or an I/O error: exit 1 and ``mmcore: stopped: ...``; SIGTERM or
    Ctrl-C: 143 or 130. However it ends, a temporary output is removed and nothing is left half-written.
    ``IndexWarning``s are printed as ``mmcore: warning: ...``."""
    import errno
    import signal
    import warnings

    from .use.deploy import IndexWarning

    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            return work()
    except _use_errors() as exc:
        return _error(exc)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EIO, getattr(errno, "EDQUOT", errno.ENOSPC)):
            print(f"mmcore: stopped: {exc}; nothing was written", file=sys.stderr)
            return 1
        return _error(exc)
    except _Terminated:
        print("mmcore: stopped: terminated (SIGTERM); nothing was written", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("mmcore: interrupted; nothing was written", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for w in caught:
            if issubclass(w.category, IndexWarning):
                print(f"mmcore: warning: {w.message}", file=sys.stderr)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _positive(args, *names) -> None:
    """``ValueError`` for a numeric option of ``args`` (``batch_size`` is ``--batch-size``) below 1."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            flag = f"-{name}" if len(name) == 1 else f"--{name.replace('_', '-')}"
            raise ValueError(f"{flag} must be a positive integer, got {value}")


def cmd_embed(args) -> int:
    from .use.deploy import check_output_file, embed_file

    def work() -> int:
        _positive(args, "batch_size")
        check_output_file(args.out, args.overwrite, inputs=(args.input,))  # before the run is loaded
        out = embed_file(_load_model(args.run_dir), args.modality, Path(args.input), Path(args.out),
                         args.batch_size, args.overwrite)
        print(f"{args.out}: {out.shape[0]} x {out.shape[1]} embeddings of {args.modality}", file=sys.stderr)
        return 0

    return _use_command(work)


def cmd_index(args) -> int:
    from .use.deploy import build_index_dir, check_index_out

    def work() -> int:
        _positive(args, "batch_size", "nprobe")
        check_index_out(args.out, args.overwrite)  # before the run is loaded
        meta = build_index_dir(_load_model(args.run_dir), args.modality, Path(args.input), Path(args.out),
                               args.factory, args.nprobe, Path(args.ids) if args.ids else None, args.batch_size,
                               args.overwrite)
        print(json.dumps(meta, indent=2))
        return 0

    return _use_command(work)


def cmd_search(args) -> int:
    def work() -> int:
        import numpy as np

        from .use.deploy import atomic_output, check_output_file, search_index

        _positive(args, "k", "batch_size")
        if args.out:
            check_output_file(args.out, args.overwrite, inputs=(args.queries,))  # before the run is loaded
        model = _load_model(args.run)
        queries = Path(args.queries)
        spec = model.inputs.get(args.modality)
        if spec is not None and spec.media == "text" and not queries.exists():
            queries = [args.queries]  # a typed query: `mmcore search INDEX --run RUN --modality text "a dog barking"`
        ids, scores, names = search_index(Path(args.index_dir), model, args.modality, queries, args.k,
                                          args.batch_size)
        if args.out:
            with atomic_output(Path(args.out), suffix=".npz") as tmp:
                np.savez(tmp, ids=ids, scores=scores)
            return 0
        for i, (row_ids, row_scores) in enumerate(zip(ids, scores)):
            found = row_ids if names is None else names[i]
            print(f"{i}\t" + "\t".join(f"{j}:{v:.4f}" for j, v in zip(found, row_scores) if np.isfinite(v)))
        return 0

    return _use_command(work)


def cmd_export(args) -> int:
    from .use.deploy import check_export_format, check_export_out, export_encoders

    def work() -> int:
        check_export_format(args.format)  # both before the run is loaded
        check_export_out(args.out, args.overwrite)
        try:
            files = export_encoders(_load_model(args.run_dir), args.format, Path(args.out), args.overwrite)
        except ImportError as exc:
            raise ValueError(f"--format {args.format} needs an extra package: {exc.name or exc} (pip install it)")
        for path in files:
            print(path)
        return 0

    return _use_command(work)


def cmd_new_plugin(args) -> int:
    from .scaffold import check_name, installed_owner, new_plugin

    try:
        owner = installed_owner(check_name(args.name), args.kind)
        root = new_plugin(args.name, args.kind, Path(args.out))
    except (ValueError, FileExistsError) as exc:
        return _error(exc)
    except OSError as exc:  # e.g. a folder without write permission: nothing was written
        return _error(f"--out {args.out}: cannot write the package ({exc.strerror or exc})")
    if owner:
        print(f"mmcore: warning: {owner} already provides the {args.kind} {args.name!r}"
              f"{' (built in)' if owner == 'mmcore' else ''}; installing this plugin too makes the name ambiguous "
              "in recipes: consider another name", file=sys.stderr)
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
    from . import __version__

    parser.add_argument("--version", action="version", version=f"mmcore {__version__}")
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
    p.add_argument("--seeds", metavar="S1,S2,...",
                   help="a study: one run per seed (e.g. --seeds 0,1,2) in one process, each in its own run "
                        "directory of the study directory (--out DIR, default <output_dir>/<recipe name>-study-<n>), "
                        "then the mean +- std of each summary metric, also in summary.json and summary.md")
    p.add_argument("--seed-key", action="append", default=[], metavar="KEY",
                   help="with --seeds: also set KEY to each run's seed, e.g. --seed-key dataset.seed for a fresh "
                        "data draw or split per seed (repeatable)")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a study over recipe values, e.g. --sweep optimizer.lr=1e-3,3e-3 (values as for --set; "
                        "repeatable: the cross product; with --seeds, every setting with every seed)")
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
    p.add_argument("--checkpoint", default="last", help="last (default), best (the best by validation loss), or "
                   "a file name under RUN_DIR/checkpoints")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.add_argument("--set", action="append", default=[], metavar="dataset.KEY=VALUE",
                   help="change a dataset setting of the run's recipe, e.g. --set dataset.path=NEW_DIR when the "
                        "data moved (repeatable; only dataset.* keys)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="compare runs: a table of summary metrics and their Recall@1 heat maps")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="file of the heat maps side by side, in an existing folder; its suffix picks the "
                                 "type: .png, .pdf or .svg (default: a fresh mmcore-report-<n>.png)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists and is a regular file")
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
    p.add_argument("name", help="component name: lowercase letters, digits and _, starting with a letter, e.g. "
                                "my_loss (the package becomes mmcore-my-loss)")
    p.add_argument("--kind", choices=KIND_CHOICES, default="encoder")
    p.add_argument("--out", default=".", help="existing folder the package is written into (default: here)")
    p.set_defaults(func=cmd_new_plugin)
    _plugin_commands(sub)
    return parser


def _plugin_commands(sub) -> None:
    """Let plugins add subcommands. Each hook runs at the plugin boundary (:func:`mmcore.registry.run_plugin_code`:
    its stdout to stderr, any BaseException or a hang is its failure); a plugin whose hook fails, or that takes or
    replaces a command already there (a core command such as ``run``), is reported on stderr and in ``mmcore
    plugins``, and the commands already there stay what they were."""
    from .registry import PluginCodeError, get_registry, plugin_timeout, run_plugin_code

    timeout = plugin_timeout()
    for record, add_commands in get_registry().command_hooks:
        before = dict(sub.choices)
        problems = []
        try:
            run_plugin_code(lambda f=add_commands: f(subparsers=sub), "adding its commands", timeout)
        except PluginCodeError as exc:
            problems.append(str(exc))
        replaced = sorted(name for name, parser in before.items() if sub.choices.get(name) is not parser)
        sub.choices.update({name: before[name] for name in replaced})
        record.commands = sorted(set(sub.choices) - set(before))
        if replaced:
            problems.insert(0, f"it replaced the command(s) {', '.join(replaced)}, which stay as they were")
        if problems:
            record.error = f"failed to add its commands: {'; '.join(problems)}"
            print(f"mmcore: warning: plugin {record.distribution} {record.error}", file=sys.stderr)


CHECKPOINT_COMMANDS = frozenset({"eval", "embed", "index", "search", "export"})
"""Commands that load a run's checkpoint (and ``run --resume``)."""


def _loads_checkpoints(argv: list) -> bool:
    """Whether the command line ``argv`` loads checkpoints: ``run`` with ``--resume`` (or an abbreviation of it,
    which argparse accepts), or one of :data:`CHECKPOINT_COMMANDS`."""
    words = [str(a) for a in argv]
    if words[:1] == ["run"]:
        return any(len(w.split("=")[0]) > 2 and "--resume".startswith(w.split("=")[0]) for w in words[1:])
    return bool(words) and words[0] in CHECKPOINT_COMMANDS


def main(argv: list | None = None) -> int:
    try:
        if _loads_checkpoints(sys.argv[1:] if argv is None else argv):
            # takes its reference to the real torch.load before build_parser imports the plugins (not for the
            # other commands: torch's import would slow down --help and validate)
            from .runs import checkpoints  # noqa: F401
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while torch or the plugins load: nothing was started
        print("mmcore: interrupted", file=sys.stderr)
        return 130
    try:
        return args.func(args)
    except BrokenPipeError:  # `mmcore search ... | head`: the reader left; not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:  # Ctrl-C outside training (which stops with a checkpoint and its own message)
        print("mmcore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
