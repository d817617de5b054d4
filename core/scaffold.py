"""``mmcore new-plugin NAME --kind KIND``: write a ready plugin package with one example component and its test.

The package installs as is (``pip install --no-deps -e .`` beside the core) and its tests pass as generated; edit
the example component from there. Every kind follows the same lazy-import idiom: ``plugin.py`` holds the attrs
config class, the build function and the hook, and imports only ``attrs`` and ``mmcore``; the torch code (the
``nn.Module`` classes, the tensor work) lives in a module of its own that the build imports, so ``mmcore --help``
and ``mmcore plugins`` never import torch because of the plugin. The generated test trains the component in a tiny
real run with :mod:`mmcore.testing`.
"""

from __future__ import annotations

import re
from pathlib import Path

KIND_CHOICES = ("encoder", "anchor", "loss", "evaluator", "dataset")

# Each kind: (plugin.py body, {module file name: text} of its torch code, change to the tiny recipe, metric, floor)
_COMPONENTS = {
    "encoder": ('''
@attrs.frozen
class {Camel}Config:
    """Settings a recipe may give in ``[encoders.<modality>]`` (unknown keys are rejected for you)."""

    hidden: int = attrs.field(default=64, validator=attrs.validators.gt(0))


def build_{snake}(config: {Camel}Config, context: mmcore.EncoderContext):
    """``[b, context.input_dim] -> [b, context.embed_dim]`` on the ``b`` present rows of modality
    ``context.modality`` (the core L2-normalises the output). ``context.input_dim`` raises ValueError for inputs
    that are not flat float vectors (``context.input`` is the full :class:`mmcore.InputSpec`)."""
    from .encoder import {Camel}

    return {Camel}(context.input_dim, config.hidden, context.embed_dim)


@mmcore.hookimpl
def mmcore_encoders():
    return [mmcore.Component("{snake}", {Camel}Config, build_{snake}, "a two-layer tanh encoder")]
''', {"encoder.py": '''"""The encoder module of `{snake}` (imported by its build: this module imports torch)."""

from torch import nn


class {Camel}(nn.Module):
    """``forward(x [b, input_dim]) -> [b, embed_dim]``: a two-layer tanh MLP.

    ``b`` may be 0 (a batch where no sample has the modality). Optional extras the core uses when present (both
    run in the DataLoader workers): ``preprocess(raw) -> input`` for one sample and ``collate(values: list) ->
    batch input`` (e.g. padding token ids).
    """

    def __init__(self, input_dim: int, hidden: int, embed_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_dim, hidden), nn.Tanh(), nn.Linear(hidden, embed_dim))

    def forward(self, x):
        return self.net(x)
'''}, 'encoders={{"text": {{"name": "{snake}"}}}}', "retrieval/trained/R@1", 0.02),
    "anchor": ('''
@attrs.frozen
class {Camel}Config:
    """``anchor``: the modality every other modality is aligned to (it must have an encoder in the recipe)."""

    anchor: str = "image"


def build_{snake}(config: {Camel}Config, context: mmcore.AnchorContext):
    """``context``: the recipe's modalities, the observed pairs, ``embed_dim`` and ``loss(term)``."""
    if config.anchor not in context.modalities:
        raise mmcore.ConfigError("anchor", f"no encoder for {{config.anchor!r}}; modalities: "
                                           f"{{', '.join(context.modalities)}}")
    from .strategy import {Camel}

    return {Camel}(config.anchor, context.modalities)


@mmcore.hookimpl
def mmcore_anchor_strategies():
    return [mmcore.Component("{snake}", {Camel}Config, build_{snake}, "align every modality to one anchor")]
''', {"strategy.py": '''"""The anchor strategy module of `{snake}` (imported by its build: this module imports torch)."""

from torch import nn

import mmcore


class {Camel}(nn.Module):
    """Term ``"<m>-<anchor>"`` for every other modality ``m``: query ``z[m]``, key ``z[anchor]``, on the rows where
    both are present (``mmcore.anchor_terms`` makes the same terms). Parameters of this module, if you add any,
    are trained and checkpointed with the model."""

    def __init__(self, anchor: str, modalities: tuple):
        super().__init__()
        self.anchor = anchor
        self.modalities = tuple(modalities)

    def forward(self, z, present, batch):
        """``z[m]``: ``[B, d]`` L2-normalised (zeros on absent rows); ``present[m]``: ``[B]`` bool."""
        a = self.anchor
        terms = [mmcore.AlignmentTerm(f"{{m}}-{{a}}", z[m], z[a], present[m] & present[a], weight=1.0, symmetric=True)
                 for m in self.modalities if m != a]
        return mmcore.Alignment(terms, aux_losses={{}})

    def term_names(self):
        """Every term name ``forward`` can return (checked by the probe step and against ``[loss.per_term]``)."""
        return mmcore.anchor_term_names(self.anchor, self.modalities)

    def trained_pairs(self, observed):
        """The observed pairs aligned directly; every other observed pair is reported as emergent."""
        return mmcore.pairs_with(self.anchor, observed)
'''}, 'anchor={{"name": "{snake}", "anchor": "image"}}', "retrieval/trained/R@1", 0.02),
    "loss": ('''
@attrs.frozen
class {Camel}Config:
    """``temperature``: initial (or fixed) temperature of the InfoNCE rows; ``learnable``: train it."""

    temperature: float = attrs.field(default=0.1, validator=attrs.validators.gt(0.0))
    learnable: bool = True


def build_{snake}(config: {Camel}Config, context: mmcore.LossContext):
    from .loss import {Camel}

    return {Camel}(config.temperature, config.learnable)


@mmcore.hookimpl
def mmcore_losses():
    return [mmcore.Component("{snake}", {Camel}Config, build_{snake}, "InfoNCE with its own temperature")]
''', {"loss.py": '''"""The loss module of `{snake}` (imported by its build: this module imports torch)."""

from torch import nn

import mmcore


class {Camel}(nn.Module):
    """Row-wise InfoNCE. The core pairs the two directions of a symmetric term, gathers the candidates of every
    rank, drops rows outside the term's mask and averages over the global batch; ``rows`` only scores."""

    def __init__(self, temperature: float, learnable: bool):
        super().__init__()
        # log_logit_scale: an nn.Parameter when learnable (trained; no weight decay: it has ndim < 2)
        mmcore.add_logit_scale(self, temperature, learnable, max_logit_scale=100.0)

    @property
    def logit_scale(self):
        """Scalar ``1 / temperature`` (the core logs ``1 / logit_scale`` as ``train/temperature``)."""
        return mmcore.clamped_logit_scale(self)

    def rows(self, query, candidates, targets, candidate_labels=None, candidate_valid=None, direction="forward",
             term=None):
        """``[n]`` losses of ``query [n, d]`` against ``candidates [N, d]``; ``targets [n]``: each row's positive
        column; ``candidate_valid [N]``: invalid candidates are never negatives; ``direction``: "forward" or
        "reverse"; ``term``: the term's name. Pass ``candidate_labels`` instead of None to restrict negatives to
        candidates with the modality id of the row's positive."""
        return mmcore.info_nce_rows(query, candidates, targets, self.logit_scale, None, candidate_valid)
'''}, 'loss={{"name": "{snake}"}}', "retrieval/trained/R@1", 0.02),
    "evaluator": ('''
@attrs.frozen
class {Camel}Config:
    """No settings yet."""


def build_{snake}(config: {Camel}Config, context: mmcore.EvaluatorContext):
    """``context``: the recipe's modalities and ``embed_dim``. Returns a fresh function per build (``mmcore.evaluator``
    sets ``summary_metrics`` on the function it is given)."""

    def evaluate(split: mmcore.EmbeddedSplit) -> dict:
        """Mean cosine between the two embeddings of each sample, for every pair of modalities, and its means over
        the trained and the emergent pairs. ``split.z[m]``: ``[N, d]`` float32 numpy, L2-normalised, zeros on
        absent rows; ``split.present[m]``: ``[N]`` bool; ``split.reference``: the same for a training subset."""
        metrics, per_pair = {{}}, {{}}
        for i, a in enumerate(split.modalities):
            for b in split.modalities[i + 1:]:
                rows = split.present[a] & split.present[b]
                if not rows.any():  # the probe step calls this on 16 samples: some pairs may have none
                    continue
                value = float((split.z[a][rows] * split.z[b][rows]).sum(1).mean())
                metrics[f"{snake}/{{a}}-{{b}}/cosine"] = value
                per_pair[a, b] = {{"cosine": value}}
        # adds {snake}/trained/cosine and {snake}/emergent/cosine: means over the pairs of each kind
        mmcore.summarise_pairs(metrics, per_pair, "{snake}", split.trained_pairs)
        return metrics

    return mmcore.evaluator(evaluate, summary_metrics=("{snake}/trained/cosine", "{snake}/emergent/cosine"))


@mmcore.hookimpl
def mmcore_evaluators():
    return [mmcore.Component("{snake}", {Camel}Config, build_{snake}, "mean paired cosine")]
''', {}, 'evaluators=[{{"name": "retrieval"}}, {{"name": "{snake}"}}]', "{snake}/trained/cosine", 0.05),
    "dataset": ('''
@attrs.frozen
class {Camel}Config:
    """Sizes of the splits, the input width of every modality, the classes and the observation noise."""

    train_size: int = attrs.field(default=512, validator=attrs.validators.gt(0))
    val_size: int = attrs.field(default=128, validator=attrs.validators.gt(0))
    test_size: int = attrs.field(default=256, validator=attrs.validators.gt(0))
    input_dim: int = attrs.field(default=16, validator=attrs.validators.gt(0))
    num_classes: int = attrs.field(default=8, validator=attrs.validators.gt(1))
    noise: float = attrs.field(default=0.5, validator=attrs.validators.ge(0.0))


def build_{snake}(config: {Camel}Config, context: mmcore.DatasetContext):
    """``context.seed``: the recipe's seed (everything random derives from it); ``context.modalities``: the
    modalities the recipe has encoders for (this dataset makes exactly those)."""
    from .data import make_splits

    return make_splits(config, context.seed, context.modalities)


@mmcore.hookimpl
def mmcore_datasets():
    return [mmcore.Component("{snake}", {Camel}Config, build_{snake}, "seeded latent-class multimodal data")]
''', {"data.py": '''"""The data of `{snake}` (imported by its build: this module imports torch)."""

import torch

import mmcore


def make_splits(config, seed: int, modalities) -> mmcore.DatasetSplits:
    """Train/val/test :class:`mmcore.TensorSplit`: each sample has a class and a latent vector around its class
    mean; each modality sees the latent through a fixed random linear map, plus noise.

    Pairing (sparse, as real data is): training and validation sample ``i`` observes the first modality and one
    other modality, round-robin, so only pairs with the first modality are observed; the test split observes
    every modality. One ``torch.Generator`` seeded with ``seed``: the same seed gives the same data everywhere.
    """
    modalities = list(modalities)
    gen = torch.Generator().manual_seed(seed)
    sizes = {{"train": config.train_size, "val": config.val_size, "test": config.test_size}}
    total = sum(sizes.values())
    latent_dim = 8
    means = 2.0 * torch.randn(config.num_classes, latent_dim, generator=gen)
    labels = torch.randint(0, config.num_classes, (total,), generator=gen)
    latent = means[labels] + torch.randn(total, latent_dim, generator=gen)
    inputs = {{m: latent @ torch.randn(latent_dim, config.input_dim, generator=gen)
              + config.noise * torch.randn(total, config.input_dim, generator=gen) for m in modalities}}

    hub, others = modalities[0], modalities[1:]
    groups = [[hub, m] for m in others] or [[hub]]
    splits, start = {{}}, 0
    for name, size in sizes.items():
        rows = slice(start, start + size)
        start += size
        if name == "test":
            present = {{m: torch.ones(size, dtype=torch.bool) for m in modalities}}
        else:
            group = torch.arange(size) % len(groups)
            present = {{m: torch.tensor([m in groups[g] for g in group.tolist()]) for m in modalities}}
        # absent rows may hold anything: TensorSplit zeroes them
        splits[name] = mmcore.TensorSplit({{m: x[rows] for m, x in inputs.items()}}, present, labels[rows])

    return mmcore.DatasetSplits(
        train=splits["train"], val=splits["val"], test=splits["test"],
        inputs={{m: mmcore.InputSpec.vector(config.input_dim) for m in modalities}},  # an int width works too
        observed_pairs=mmcore.observed_pairs(groups),
        class_names=tuple(f"class {{k}}" for k in range(config.num_classes)),
    )
'''}, 'dataset={{"name": "{snake}"}}', "retrieval/trained/R@1", 0.02),
}

_PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "An mmcore plugin: {kind} {snake!r}"
requires-python = ">=3.10"
# the core's distribution (PyPI's "mmcore" is an unrelated project): install the core first, or use --no-deps
dependencies = ["mmcore-framework>=0.1"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points.mmcore]
{snake} = "{package}.plugin"

[tool.setuptools]
packages = ["{package}"]
'''

_TEST = '''"""Generated by `mmcore new-plugin`: the component is registered, and trains in a real (tiny) run."""

import mmcore
from mmcore.testing import run_recipe, tiny_recipe


def test_{snake}_is_registered():
    registry = mmcore.get_registry()
    assert "{snake}" in registry.names("{registry_kind}")
    assert registry.distribution_of("{registry_kind}", "{snake}") == "{dist}"


def test_{snake}_runs_in_a_recipe(tmp_path):
    # tiny_recipe: built-in components only (synthetic data, mlp encoders, pairwise anchor, infonce), with the
    # sections given here changed; run_recipe validates (contract checks and probe step), trains and evaluates it
    metrics = run_recipe(tiny_recipe({change}), tmp_path / "run")
    assert metrics["{metric}"] > {floor}
'''

_README = '''# {dist}

An mmcore plugin providing the {kind} `{snake}`.

```bash
pip install -e /path/to/mmcore -e ".[test]"     # the core (distribution mmcore-framework) and this package
# or, with the core already installed: pip install --no-deps -e . (then pip install pytest)
mmcore plugins                                  # lists {dist} and its component
python -m pytest tests
```

Use it in a recipe:

```toml
{usage}
```

`mmcore validate RECIPE` builds every component and runs one probe step before any training. After changing the
entry point in `pyproject.toml`, reinstall (`pip install --no-deps -e .`): entry points are package metadata.
'''

_USAGE = {
    "encoder": '[encoders.text]\nname = "{snake}"\nhidden = 64',
    "anchor": '[anchor]\nname = "{snake}"\nanchor = "image"',
    "loss": '[loss]\nname = "{snake}"\ntemperature = 0.1',
    "evaluator": '[[evaluators]]\nname = "{snake}"',
    "dataset": '[dataset]\nname = "{snake}"\ntrain_size = 512\ninput_dim = 16',
}
_REGISTRY_KIND = {"encoder": "encoders", "anchor": "anchor_strategies", "loss": "losses", "evaluator": "evaluators",
                  "dataset": "datasets"}


def _plugin_docstring(kind: str, snake: str, package: str, modules: dict) -> str:
    torch_code = (f"; its torch code is in\n`{package}.{next(iter(modules))[:-3]}`, which the build imports"
                  if modules else "")
    return (f'"""The {kind} `{snake}`, registered with mmcore through the `mmcore` entry-point group.\n\n'
            f"This module imports attrs and mmcore only (the core imports it for every `mmcore` command){torch_code}."
            '\n"""\n\n')


NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
"""A component name ``new-plugin`` accepts: it is used as is in the recipe, the package (``mmcore_<name>``), the
distribution (``mmcore-<name>`` with ``-`` for ``_``), a Python module and class name and a path component."""
NAME_RULE = "lowercase ASCII letters, digits and _, starting with a letter, at most 64 characters (e.g. my_loss)"


def check_name(name: str) -> str:
    """``name`` when :data:`NAME` accepts it; ``ValueError`` saying what is allowed otherwise (it is never rewritten:
    ``../evil`` or ``a;rm -rf x`` silently becoming another name would surprise), with the nearest valid name."""
    if NAME.fullmatch(name):
        return name
    guess = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
    hint = f"; did you mean {guess!r}?" if re.fullmatch(r"[A-Za-z0-9_-]+", name) and NAME.fullmatch(guess) else ""
    raise ValueError(f"{name!r} is not usable as a component name: use {NAME_RULE}{hint}")


def installed_owner(name: str, kind: str) -> str | None:
    """The distribution that already provides a ``kind`` component ``name`` (``"mmcore"`` for a built-in), or None.
    A plugin of the same name would clash with it in recipes."""
    from .registry import get_registry

    registry, registry_kind = get_registry(), _REGISTRY_KIND[kind]
    return registry.distribution_of(registry_kind, name) if name in registry.names(registry_kind) else None


def new_plugin(name: str, kind: str, parent: Path) -> Path:
    """Write the package ``mmcore-<name>`` under the existing folder ``parent`` and return its directory. The
    package appears whole or not at all (written in a temporary folder beside it, then renamed); nothing is
    replaced. ``ValueError`` (bad name or kind, ``parent`` not a folder) or ``FileExistsError`` before anything is
    written."""
    from .files import atomic_output

    if kind not in KIND_CHOICES:
        raise ValueError(f"unknown kind {kind!r}; choose one of: {', '.join(KIND_CHOICES)}")
    snake = check_name(name)
    parent = Path(parent)
    if not parent.is_dir():
        raise ValueError(f"--out {parent} " + ("is not a folder" if parent.exists() else "does not exist")
                         + ": --out is the folder the package is written into")
    dist = f"mmcore-{snake.replace('_', '-')}"
    package = f"mmcore_{snake}"
    root = parent / dist
    if root.exists() or root.is_symlink():
        raise FileExistsError(f"{root} already exists")
    camel = "".join(part.title() for part in snake.split("_"))
    body, modules, change, metric, floor = _COMPONENTS[kind]
    fields = dict(snake=snake, Camel=camel, dist=dist, package=package, kind=kind,
                  registry_kind=_REGISTRY_KIND[kind])
    change, metric = change.format(**fields), metric.format(**fields)
    files = {
        "pyproject.toml": _PYPROJECT.format(**fields),
        f"{package}/__init__.py": f'"""mmcore plugin {dist}."""\n',
        f"{package}/plugin.py": _plugin_docstring(kind, snake, package, modules)
                                + "import attrs\n\nimport mmcore\n\n" + body.format(**fields),
        **{f"{package}/{module}": text.format(**fields) for module, text in modules.items()},
        f"tests/test_{snake}.py": _TEST.format(change=change, metric=metric, floor=floor, **fields),
        "README.md": _README.format(usage=_USAGE[kind].format(**fields), **fields),
    }
    with atomic_output(root, directory=True) as tmp:
        for relative, text in files.items():
            path = tmp / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return root
