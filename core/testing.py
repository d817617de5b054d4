"""Helpers for testing plugins: a tiny complete recipe that needs no plugin, one-call runs, and the CLI in a
subprocess (``run_cli``, with ``TINY_OVERRIDES`` to shrink a recipe file).

    from mmcore.testing import tiny_recipe, run_recipe

    def test_my_encoder_trains(tmp_path):
        metrics = run_recipe(tiny_recipe(encoders={"text": {"name": "my_encoder"}}), tmp_path / "run")
        assert metrics["retrieval/trained/R@1"] > 0.05        # chance is 1/256
"""

from __future__ import annotations

import contextlib
import copy
import signal
from pathlib import Path

TINY = {
    "name": "tiny",
    "seed": 0,
    "embed_dim": 32,
    "dataset": {"name": "synthetic", "train_size": 512, "val_size": 128, "test_size": 256,
                "modalities": {"image": {"input_dim": 24}, "text": {"input_dim": 16}, "audio": {"input_dim": 20}}},
    "encoders": {m: {"name": "mlp", "hidden": [64]} for m in ("image", "text", "audio")},
    "anchor": {"name": "pairwise"},
    "loss": {"name": "infonce"},
    "evaluators": [{"name": "retrieval"}, {"name": "prototypes"}, {"name": "knn"}],
    "optimizer": {"lr": 0.003},
    "trainer": {"max_epochs": 4, "batch_size": 128, "log_every_n_steps": 1, "accelerator": "cpu", "devices": 1},
}
"""A recipe (raw dict) that trains in a few seconds on a CPU with built-in components only."""


def _merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and value.get("name", out[key].get("name")) == \
                out[key].get("name"):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_recipe(**changes) -> dict:
    """:data:`TINY` with sections changed, merged like ``extends`` (a section whose ``name`` changes is replaced)."""
    return _merge(copy.deepcopy(TINY), changes)


def run_recipe(raw: dict, out: str | Path, callbacks: tuple = ()) -> dict:
    """Validate, train and evaluate a raw recipe dict into the fresh directory ``out``; returns the test metrics.
    Raises :class:`mmcore.RecipeError` for an invalid recipe, as ``mmcore run`` would report it. ``callbacks``:
    Lightning callbacks added to the run's own (to watch the training from a test)."""
    from .recipe import structure_recipe
    from .registry import get_registry
    from .runs.directory import make_run_dir
    from .runs.train import train
    from .train.build import assemble

    registry = get_registry()
    recipe = structure_recipe(raw, registry, "<test recipe>")
    built = assemble(recipe, registry)
    run_dir = make_run_dir(recipe, out)
    return train(recipe, [], run_dir, registry, module_data=built, callbacks=tuple(callbacks))


def interpret_triton() -> None:
    """Run Triton kernels on the CPU, in Triton's interpreter: sets ``TRITON_INTERPRET=1`` (call it before the
    module defining the kernels is imported: ``triton.jit`` reads it then). Under Triton < 3.6 it also fixes the
    interpreter's loop bounds, which call ``int()`` on a one-element array (NumPy >= 2.4 refuses; Triton 3.6
    squeezes it first). The interpreter only: compiled kernels are unaffected."""
    import os

    os.environ["TRITON_INTERPRET"] = "1"
    import triton

    if tuple(int(x) for x in triton.__version__.split(".")[:2]) < (3, 6):
        import triton.runtime.interpreter as interpreter

        patch = interpreter._patch_lang_tensor

        def patched(tensor, *rest):
            patch(tensor, *rest)
            tensor.__index__ = lambda self: int(self.handle.data.squeeze())

        interpreter._patch_lang_tensor = patched


def module_and_batch(raw: dict, registry=None) -> tuple:
    """``(module, batch)``: a raw recipe's assembled :class:`~mmcore.train.module.BindingModule` in training mode
    and its first training :class:`mmcore.Batch`, for checks of one step (:func:`step_gradients`)."""
    from .contracts import Batch
    from .recipe import structure_recipe
    from .registry import get_registry
    from .train.build import assemble

    registry = registry or get_registry()
    module, data = assemble(structure_recipe(raw, registry, "<test recipe>"), registry)
    data.setup("fit")
    module.train()
    return module, Batch.from_collated(next(iter(data.train_dataloader())))


def step_gradients(module, batch, chunk: int = 0, seed: int = 0) -> tuple:
    """``(loss, {parameter name: gradient})`` of one training step on ``batch``, the RNG seeded with ``seed``:
    the plain step (``chunk = 0``) or the cached one (``trainer.embed_chunk = chunk``). An encoder keeps the cached
    step's promise when both give the same gradients (BatchNorm in training mode does not: statistics per chunk)."""
    import torch

    module.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    losses, finish = module.step_losses(batch, chunk)
    total = torch.stack(list(losses.values())).sum()
    finish(total).backward()
    return total.item(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


TINY_OVERRIDES = (
    "trainer.max_epochs=1",
    "dataset.train_size=512",
    "dataset.val_size=128",
    "dataset.test_size=256",
    "trainer.batch_size=128",
    "trainer.log_every_n_steps=1",
)
"""``--set`` overrides that shrink a synthetic-data recipe file to a few seconds."""


def run_cli(*args, env_extra: dict | None = None, cwd=None, check: bool = False, timeout: float = 600):
    """Run ``python -m mmcore.cli ARGS`` in a subprocess (as a user would, progress bars off) and return the
    ``subprocess.CompletedProcess`` (text mode). ``check``: raise AssertionError, with stderr, on a non-zero exit."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("MMCORE_PLUGINS", None)
    env["CI"] = "true"
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-m", "mmcore.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"mmcore {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def cli(*args, cwd=None) -> tuple:
    """Run the ``mmcore`` command line in this process (fast: torch is imported once) -> ``(exit status, stdout,
    stderr)``. ``cwd``: the working directory for the call (restored afterwards)."""
    import contextlib
    import io
    import os

    from .cli import main

    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main([str(a) for a in args])
    finally:
        os.chdir(before)
    return status, out.getvalue(), err.getvalue()


def run_recipe_file(recipe, out, overrides=(), threads: int = 1) -> dict:
    """``mmcore run RECIPE --out OUT --set ...`` in this process with ``threads`` torch threads (restored after;
    one is fastest for small models on a shared machine) -> the run's metrics (``metrics.json``). Raises
    AssertionError, with the end of stderr, if the run fails."""
    import json

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        status, _, err = cli("run", recipe, "--out", out, *[x for item in overrides for x in ("--set", item)])
    finally:
        torch.set_num_threads(before)
    if status != 0:
        raise AssertionError(f"mmcore run {recipe} failed ({status}):\n{err[-3000:]}")
    return json.loads((Path(out) / "metrics.json").read_text())


@contextlib.contextmanager
def deadline(seconds: int):
    """Raise ``TimeoutError`` in the main thread when the block still runs after ``seconds`` (``SIGALRM``, POSIX
    only), so that a test of code that must never block (opening a FIFO, reading ``/dev/zero``) fails instead of
    hanging the suite."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
