"""Studies: several seeds, or a sweep over recipe values, trained one after another in one process.

``mmcore run RECIPE --seeds 0,1,2 --sweep optimizer.lr=1e-3,3e-3`` is a plan of runs (:func:`plan_study`): the
cross product of the ``--sweep`` values (each ``KEY=V1,V2,...``, every value parsed as a ``--set`` value), each
with every seed (``seed = s``; without ``--seeds``, the recipe's own seed). A run is exactly the separate
``mmcore run RECIPE --set ... --set KEY=V --set seed=S``: the same overrides, applied in that order.

The study directory (``--out DIR``, or the first free ``<output_dir>/<recipe name>-study-<n>``) holds one run
directory per run, named after its settings (``seed-0``, ``optimizer.lr=1e-3-seed-1``: one path component), and
``summary.json`` / ``summary.md``: for each sweep setting, the mean and sample standard deviation (n - 1) across
its seeds of each summary metric (:func:`summarize`). Both are written before the first run and rewritten after
each, so a study that stops (a failed run, Ctrl-C, a kill) leaves the summary of the runs that finished.

:class:`SharedDatasets` builds each distinct dataset once for the whole study.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from pathlib import Path

import attrs

SUMMARY_FILES = ("summary.json", "summary.md")
"""What a study writes at the top of its directory, next to its runs."""

MAX_NAME = 100
"""The longest run directory name (characters); longer names are cut and numbered."""


class StudyError(ValueError):
    """Bad ``--seeds`` or ``--sweep`` (or a combination of them with ``--set``); the CLI exits 2."""


@attrs.frozen
class Sweep:
    """One ``--sweep KEY=V1,V2,...``: the key and its values, each as written (``text``) and parsed (``value``)."""

    key: str
    texts: tuple
    values: tuple


@attrs.frozen
class StudyRun:
    """One run of a study. ``name``: its directory (one path component); ``setting``: the sweep part of the name
    (``""`` without ``--sweep``), which groups runs in the summary; ``seed``: the seed ``--seeds`` gives it, or
    None (the recipe's own); ``overrides``: the ``KEY=VALUE`` strings it adds after the study's ``--set``."""

    name: str
    setting: str
    seed: int | None
    overrides: tuple


# ------------------------------------------------------------------------------------------ the plan


def parse_seeds(text: str) -> tuple:
    """``"0,1,2"`` -> ``(0, 1, 2)``: distinct non-negative integers, comma-separated (spaces allowed). The upper
    bound is the recipe's (``seed``), checked with the recipe."""
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise StudyError("--seeds: give one or more seeds, e.g. --seeds 0,1,2")
    seeds = []
    for item in items:
        if not item.isascii() or not item.isdigit():
            raise StudyError(f"--seeds {text}: {item!r} is not a seed; seeds are non-negative integers, e.g. 0,1,2")
        seed = int(item)
        if seed in seeds:
            raise StudyError(f"--seeds {text}: seed {seed} is given twice")
        seeds.append(seed)
    return tuple(seeds)


def _split_values(text: str) -> list:
    """``text`` split at the commas outside TOML brackets and quotes (``[64],[128]`` is two arrays)."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and (quote == "'" or (len(text[:i]) - len(text[:i].rstrip("\\"))) % 2 == 0):
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def _same(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def parse_sweep(item: str) -> Sweep:
    """``"optimizer.lr=1e-3,3e-3"`` -> a :class:`Sweep`. Each value is parsed as a ``--set`` value is
    (:func:`mmcore.recipe.parse_override_value`: TOML, or a bare word as a string); the key is checked with the
    recipe (an unknown key is a recipe error naming it)."""
    from ..recipe import parse_override_value

    key, sep, rest = str(item).partition("=")
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise StudyError(f"--sweep {item!r}: expected KEY=V1,V2,... with a dotted key, e.g. "
                         "--sweep optimizer.lr=1e-3,3e-3")
    texts = [t.strip() for t in _split_values(rest)]
    if not any(texts):
        raise StudyError(f"--sweep {key}: no values; e.g. --sweep {key}=V1,V2")
    values, seen = [], {}
    for text in texts:
        if not text:
            raise StudyError(f"--sweep {key}={rest}: an empty value (two commas, or one at an end)")
        try:
            value = parse_override_value(text)
        except ValueError as exc:
            raise StudyError(f"--sweep {key}: value {text!r}: {exc}") from None
        if _same(value) in seen:
            raise StudyError(f"--sweep {key}: {seen[_same(value)]!r} and {text!r} are the same value")
        seen[_same(value)] = text
        values.append(value)
    return Sweep(key, tuple(texts), tuple(values))


def _set_keys(overrides) -> set:
    return {o.partition("=")[0].strip() for o in overrides}


def _name_part(key: str, text: str, value) -> str:
    return f"{key}={value if isinstance(value, str) else text}"


def _clean(name: str) -> str:
    """``name`` as one portable path component: anything but letters, digits and ``._=+@,-`` becomes ``_``, and
    it never starts with a dot."""
    name = re.sub(r"[^A-Za-z0-9._=+@,-]", "_", name)
    return "_" + name[1:] if name.startswith(".") else name


def plan_study(seeds: tuple | None, sweeps: list, sets: list = (), seed_keys: tuple = ()) -> list:
    """The runs of a study, sweep settings in the order given (the last ``--sweep`` varying fastest), every
    setting with every seed in the order given. ``seeds``: from :func:`parse_seeds`, or None for the recipe's
    own seed. ``seed_keys`` (``--seed-key``): recipe keys that also get each run's seed, e.g. ``dataset.seed`` for
    a fresh data draw (or split) per seed; ``seed`` itself always does. Refused (:class:`StudyError`): a key swept
    twice, swept and also ``--set``, ``seed`` swept (``--seeds`` is for that), ``--seeds`` with ``--set seed=...``,
    a seed key without ``--seeds``, swept or ``--set``. Run names are distinct: a clash after cleaning (``a/b`` and
    ``a_b``) or a cut name gets ``-<k>`` added."""
    import itertools

    keys = [s.key for s in sweeps]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise StudyError(f"--sweep {twice[0]} is given twice; give all its values in one --sweep {twice[0]}=V1,V2")
    both = sorted(set(keys) & _set_keys(sets))
    if both:
        raise StudyError(f"--sweep {both[0]} and --set {both[0]} both set it; drop one")
    if "seed" in keys:
        raise StudyError("--sweep seed: use --seeds 0,1,2 for seeds (the summary averages over them)")
    if seeds is not None and "seed" in _set_keys(sets):
        raise StudyError("--seeds and --set seed both set the seed; drop one")
    if any(not k.strip() for k in seed_keys):
        raise StudyError("--seed-key: give a recipe key, e.g. --seed-key dataset.seed")
    seed_keys = tuple(dict.fromkeys(k.strip() for k in seed_keys if k.strip() != "seed"))
    if seed_keys and seeds is None:
        raise StudyError(f"--seed-key {seed_keys[0]} gives each run's seed to that key: it needs --seeds")
    for key in seed_keys:
        if key in keys or key in _set_keys(sets):
            how = "--sweep" if key in keys else "--set"
            raise StudyError(f"--seed-key {key} and {how} {key} both set it; drop one")
    runs, names = [], set()
    for combination in itertools.product(*[list(zip(s.texts, s.values)) for s in sweeps]):
        parts = [_name_part(s.key, text, value) for s, (text, value) in zip(sweeps, combination)]
        setting = "-".join(parts)
        overrides = [f"{s.key}={text}" for s, (text, _) in zip(sweeps, combination)]
        for seed in (seeds if seeds is not None else (None,)):
            name = _clean("-".join(parts + ([f"seed-{seed}"] if seed is not None else [])))
            base = name[:MAX_NAME - 6]
            k = 1
            while name in names or len(name) > MAX_NAME:
                k += 1
                name = f"{base}-{k}"
            names.add(name)
            seeded = [f"{key}={seed}" for key in ("seed", *seed_keys)] if seed is not None else []
            runs.append(StudyRun(name, setting, seed, tuple(overrides + seeded)))
    return runs


# ------------------------------------------------------------------------------------------ the study directory


def check_study_out(out) -> None:
    """``--out`` of a study: free, or an empty directory (a study never replaces anything). Nothing is written."""
    path = Path(out)
    if (path.exists() or path.is_symlink()) and not (path.is_dir() and not path.is_symlink()
                                                     and not any(path.iterdir())):
        raise StudyError(f"--out {path} already exists and is not empty; a study never replaces anything: "
                         "choose another --out")


def make_study_dir(recipe, out=None) -> Path:
    """``out`` (checked with :func:`check_study_out`), else the first free ``<output_dir>/<name>-study-<n>``."""
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        return Path(out)
    base = Path(recipe.output_dir)
    base.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = base / f"{recipe.name}-study-{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def one_process_problem(recipe) -> str | None:
    """Why a study cannot train this recipe, or None. A study trains its runs one after another in this process;
    a recipe that Lightning would train in several processes (DDP over several devices or nodes) restarts the
    whole command in each of them, so it is refused. Lightning says how many: a bare Trainer with the recipe's
    accelerator, devices, strategy and num_nodes (:func:`mmcore.train.settings.construct_trainer`)."""
    from ..train.settings import construct_trainer

    t = recipe.trainer
    trainer, error = construct_trainer({"accelerator": t.accelerator, "devices": t.devices, "strategy": t.strategy,
                                        "num_nodes": t.num_nodes})
    if error is not None:  # the trainer check of the same recipe, right after, names the setting
        return None
    if trainer.world_size > 1:
        return (f"trainer: {trainer.world_size} processes (devices = {t.devices!r}, num_nodes = {t.num_nodes}); a "
                "study trains its runs one after another in one process: --set trainer.devices=1 (or run each "
                "setting with its own mmcore run)")
    return None


# ------------------------------------------------------------------------------------------ shared datasets


def _canonical(value) -> str:
    if attrs.has(type(value)):
        value = {"type": type(value).__qualname__, **attrs.asdict(value, recurse=True)}
    return json.dumps(value, sort_keys=True, default=repr)


def _rng_states() -> tuple:
    import random

    import numpy as np
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _set_rng_states(states: tuple) -> None:
    import random

    import numpy as np
    import torch

    python, numpy, cpu, cuda = states
    random.setstate(python)
    np.random.set_state(numpy)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


class SharedDatasets:
    """A registry (:class:`mmcore.registry.Registry`, every attribute passed through) that builds each distinct
    dataset once: ``build("datasets", name, config, context, path)`` is keyed on exactly what the dataset's build
    receives, its name, its structured config and its :class:`mmcore.DatasetContext` (the recipe's seed and
    modalities), so two runs share data only where a separate build would get the same arguments. A seed change
    gives a new build, as the dataset may use the seed.

    A repeated build returns the first build's splits and sets the global RNG states (python, numpy, torch) to
    what the first build left: ``assemble`` seeds them from the recipe's seed just before, so the model then
    starts from the state a fresh build would have left, and a run of a study equals its separate ``mmcore run``
    even for a dataset that draws from the global RNG. Splits must not be changed by training (the core's never
    are)."""

    def __init__(self, registry):
        self._registry = registry
        self._built = {}
        self.builds = 0
        """How many datasets were really built."""

    def __getattr__(self, name):
        return getattr(self._registry, name)

    def build(self, kind: str, name: str, config, context, path: str):
        if kind != "datasets":
            return self._registry.build(kind, name, config, context, path)
        key = (name, _canonical(config), _canonical(context))
        if key not in self._built:
            splits = self._registry.build(kind, name, config, context, path)
            self.builds += 1
            self._built[key] = (splits, _rng_states())
        splits, states = self._built[key]
        _set_rng_states(states)
        return splits


# ------------------------------------------------------------------------------------------ the summary


def summarize(runs: list, finished: dict, recipe_name: str, stopped: dict | None = None) -> dict:
    """The study's summary. ``runs``: the plan (:class:`StudyRun`); ``finished``: run name -> ``(metrics, keys)``,
    its test metrics and the metric keys to summarise (its summary metrics, in order); ``stopped``: ``{"run":
    name, "exit_status": code}`` when the study stopped early.

    For each setting (in plan order): its finished runs and, for each key of any of them (first-seen order),
    ``{"mean", "std", "n", "values"}`` over the finished runs that have it: ``std`` is the sample standard deviation
    (n - 1), None for n = 1."""
    settings = {}
    for run in runs:
        settings.setdefault(run.setting, []).append(run)
    out = []
    for setting, members in settings.items():
        done = [run for run in members if run.name in finished]
        keys = list(dict.fromkeys(k for run in done for k in finished[run.name][1]))
        metrics = {}
        for key in keys:
            values = [float(finished[run.name][0][key]) for run in done if key in finished[run.name][0]]
            metrics[key] = {"mean": statistics.fmean(values),
                            "std": statistics.stdev(values) if len(values) > 1 else None,
                            "n": len(values), "values": values}
        out.append({"setting": setting or recipe_name, "runs": [run.name for run in done],
                    "seeds": [run.seed for run in done], "n": len(done), "planned": len(members),
                    "metrics": metrics})
    return {"complete": len(finished) == len(runs) and stopped is None, "planned": len(runs),
            "finished": len(finished), "stopped": stopped,
            "runs": [{"dir": run.name, "setting": run.setting or recipe_name, "seed": run.seed,
                      "overrides": list(run.overrides),
                      "status": "finished" if run.name in finished else
                      "stopped" if stopped and stopped["run"] == run.name else "not run"} for run in runs],
            "settings": out}


def _cell(stats: dict | None, n: int, plus_minus: str) -> str:
    if stats is None:
        return "-"
    text = f"{stats['mean']:.4f}"
    if stats["std"] is not None and not math.isnan(stats["std"]):
        text += f" {plus_minus} {stats['std']:.4f}"
    return text + (f" (n={stats['n']})" if stats["n"] != n else "")


def summary_table(summary: dict, plus_minus: str = "±") -> str:
    """A Markdown table: one row per metric, one column per setting headed ``<setting> (n=<runs>)``, cells
    ``mean ± std`` (``(n=k)`` added where fewer runs have the metric)."""
    settings = summary["settings"]
    keys = list(dict.fromkeys(k for s in settings for k in s["metrics"]))
    header = ["metric", *[f"{s['setting']} (n={s['n']})" for s in settings]]
    rows = [[key, *[_cell(s["metrics"].get(key), s["n"], plus_minus) for s in settings]] for key in keys]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"  # noqa: E731
    lines = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    if summary["stopped"]:
        lines.append(f"\nThe study stopped at run {summary['stopped']['run']} (exit status "
                     f"{summary['stopped']['exit_status']}): {summary['finished']} of {summary['planned']} runs "
                     "finished.")
    elif not summary["complete"]:
        lines.append(f"\n{summary['finished']} of {summary['planned']} runs finished so far.")
    return "\n".join(lines)


def write_summary(study_dir: Path, summary: dict) -> None:
    """``summary.json`` and ``summary.md`` in ``study_dir``, each written atomically."""
    from .directory import write_atomic

    write_atomic(study_dir / "summary.json", json.dumps(summary, indent=2))
    write_atomic(study_dir / "summary.md", f"# {study_dir.name}\n\n" + summary_table(summary) + "\n")


def print_summary(summary: dict) -> None:
    """The summary table on stdout (``+-`` where stdout cannot encode ``±``: an ASCII locale)."""
    encoding = getattr(sys.stdout, "encoding", None)  # None: a stream of str (io.StringIO) takes any character
    try:
        plus_minus = "±" if encoding is None or "±".encode(encoding) else "+-"
    except (UnicodeEncodeError, LookupError):
        plus_minus = "+-"
    print(summary_table(summary, plus_minus))
