"""What a run shows a user (issue 17): TensorBoard's scalars and HParams view, ``tb/hparams.yaml``, the progress
bar, the figures' keys, and a Ctrl-C that says nothing about ``weights_only``."""

import logging
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmcore.testing import tiny_recipe

SIZES = {"train_size": 256, "val_size": 128, "test_size": 256}
"""2 batches of 128 an epoch."""


class _RecordsOf(logging.Handler):
    """The messages Lightning's loggers (``lightning.pytorch``, ``lightning.fabric``) emit inside the block."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []
        self.loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        for logger in self.loggers:
            logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        for logger in self.loggers:
            logger.removeHandler(self)


def _ctrl_c_at_step_1():
    import lightning as L

    class CtrlC(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 1:
                raise KeyboardInterrupt  # what Python's SIGINT handler raises

    return CtrlC()


def _events(tb: Path) -> dict:
    """Every summary value in ``tb``'s event files: tag -> [(step, value proto)], in the order written."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out = {}
    for path in sorted(tb.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value if event.HasField("summary") else ():
                out.setdefault(value.tag, []).append((event.step, value))
    return out


@pytest.fixture(scope="module")
def interrupted_then_resumed(tmp_path_factory):
    """A one-epoch run (2 steps) interrupted by Ctrl-C after step 1, with Lightning's notes shown
    (``MMCORE_LIGHTNING_NOTES=1``), then resumed with ``trainer.max_epochs = 2`` to the end (step 4). Returns
    ``(run_dir, Lightning's messages during the interrupted part, tb/hparams.yaml after it)``."""
    from mmcore.recipe import structure_recipe
    from mmcore.registry import get_registry
    from mmcore.runs.directory import make_run_dir
    from mmcore.runs.train import train
    from mmcore.train.build import assemble

    registry = get_registry()
    patch = pytest.MonkeyPatch()
    patch.setenv("MMCORE_LIGHTNING_NOTES", "1")
    sigint = signal.getsignal(signal.SIGINT)
    try:
        first = structure_recipe(tiny_recipe(dataset=SIZES, trainer={"max_epochs": 1}), registry, "<test>")
        run_dir = make_run_dir(first, tmp_path_factory.mktemp("tb") / "run")
        with _RecordsOf() as records, pytest.raises(SystemExit):  # Lightning exits after a KeyboardInterrupt
            train(first, [], run_dir, registry, module_data=assemble(first, registry), callbacks=(_ctrl_c_at_step_1(),))
        interrupted_hparams = (run_dir / "tb" / "hparams.yaml").read_text()
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores SIGINT from then on
        patch.undo()
    assert (run_dir / "checkpoints" / "interrupted.ckpt").is_file()
    resumed = structure_recipe(tiny_recipe(dataset=SIZES, trainer={"max_epochs": 2}), registry, "<test>")
    train(resumed, [], run_dir, registry, module_data=assemble(resumed, registry), resume=True)
    return run_dir, records.messages, interrupted_hparams


def test_ctrl_c_saves_its_checkpoint_without_lightnings_weights_only_note(interrupted_then_resumed):
    _, messages, _ = interrupted_then_resumed
    assert any("Detected KeyboardInterrupt" in m for m in messages), messages  # Lightning's notes were captured
    assert not [m for m in messages if "weights_only" in m], messages


def test_test_scalars_are_written_once_at_the_last_training_step(interrupted_then_resumed):
    from mmcore.runs.checkpoints import load_checkpoint

    run_dir, _, _ = interrupted_then_resumed
    last_step = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    assert last_step == 4
    events = _events(run_dir / "tb")
    metrics = yaml.safe_load((run_dir / "metrics.json").read_text())  # JSON is YAML
    steps = {tag: [step for step, _ in values] for tag, values in events.items() if tag.startswith("test/")}
    assert set(steps) == {f"test/{k}" for k in metrics}
    assert {tag: s for tag, s in steps.items() if s != [last_step]} == {}


def test_hparams_yaml_holds_the_flattened_recipe_of_the_hparams_view_during_and_after_training(
        interrupted_then_resumed):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir, _, interrupted = interrupted_then_resumed
    during = yaml.safe_load(interrupted)
    assert during["trainer.max_epochs"] == 1 and during["optimizer.lr"] == 0.003, during
    written = yaml.safe_load((run_dir / "tb" / "hparams.yaml").read_text())
    assert written["trainer.max_epochs"] == 2  # the resumed run's recipe
    assert written["name"] == "tiny" and written["evaluators.0.name"] == "retrieval"
    assert written["encoders.text.hidden"] == "[64]"  # as the HParams view shows a list
    events = _events(run_dir / "tb")
    (_, start), = events["_hparams_/session_start_info"]
    shown = plugin_data_pb2.HParamsPluginData.FromString(start.metadata.plugin_data.content).session_start_info
    assert set(shown.hparams) == set(written)
    assert shown.hparams["optimizer.lr"].number_value == written["optimizer.lr"]
    (_, experiment), = events["_hparams_/experiment"]
    declared = plugin_data_pb2.HParamsPluginData.FromString(experiment.metadata.plugin_data.content).experiment
    metrics = yaml.safe_load((run_dir / "metrics.json").read_text())
    assert {m.name.tag for m in declared.metric_infos} == {f"test/{k}" for k in metrics}


def test_the_progress_bar_shows_no_v_num(tmp_path, monkeypatch):
    import sys

    from mmcore.recipe import structure_recipe
    from mmcore.registry import get_registry
    from mmcore.runs.train import make_trainer

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # an interactive terminal: the bar is on
    recipe = structure_recipe(tiny_recipe(), get_registry(), "<test>")
    trainer = make_trainer(recipe, tmp_path)
    bar = trainer.progress_bar_callback
    assert bar is not None and "v_num" not in bar.get_metrics(trainer, None)


def _split(classes: int, named: bool):
    from mmcore.contracts import EmbeddedSplit

    rng = np.random.default_rng(0)
    labels = np.arange(400) % classes
    z = {m: rng.normal(size=(400, 8)).astype(np.float32) for m in ("image", "text")}
    return EmbeddedSplit(z=z, present={m: np.ones(400, bool) for m in z}, labels=labels,
                         class_names=tuple(f"kind {k}" for k in range(classes)) if named else ())


@pytest.mark.parametrize("classes, named", [(12, False), (25, True)])
def test_the_2d_map_has_axis_labels_a_class_legend_and_no_repeated_colour(classes, named):
    import matplotlib.pyplot as plt

    from mmcore.runs.figures import projection_figure

    fig = projection_figure(_split(classes, named))
    try:
        by_modality, by_class = fig.axes[:2]
        for ax in (by_modality, by_class):
            assert ax.get_xlabel().startswith("PC 1 (") and ax.get_ylabel().startswith("PC 2 (")
        assert [t.get_text() for t in by_modality.get_legend().get_texts()] == ["image", "text"]
        names = [f"kind {k}" if named else str(k) for k in range(classes)]
        assert [t.get_text() for t in by_class.get_legend().get_texts()] == names
        colours = {tuple(c.get_facecolor()[0]) for c in by_class.collections}
        assert len(colours) == classes
    finally:
        plt.close(fig)


def test_the_2d_map_of_many_classes_has_a_colour_bar_and_no_repeated_colour():
    import matplotlib.pyplot as plt

    from mmcore.runs.figures import distinct_colours, projection_figure

    assert len({tuple(c) for c in distinct_colours(500)}) == 500
    fig = projection_figure(_split(40, True))
    try:
        by_class = fig.axes[1]
        assert by_class.get_legend() is None
        fig.canvas.draw()  # the points' colours are computed when drawn
        (points,) = by_class.collections
        assert len({tuple(c) for c in points.get_facecolors()}) == 40
        (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert bar.get_ylabel() == "class" and bar.get_yticklabels()[0].get_text() == "kind 0"
    finally:
        plt.close(fig)


def test_the_report_png_has_a_colour_key_and_a_key_to_its_marks(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from mmcore.use.report import side_by_side_heatmaps

    saved = []
    savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (saved.append(self), savefig(self, *a, **k))[1])
    metrics = {f"retrieval/{q}->{g}/R@1": 0.5 for q in ("image", "text") for g in ("image", "text") if q != g}
    run = {"dir": tmp_path / "run-1", "metrics": metrics, "modalities": ["image", "text"],
           "trained_pairs": frozenset({frozenset({"image", "text"})})}
    assert side_by_side_heatmaps([run, dict(run, dir=tmp_path / "run-2")], tmp_path / "report.png")
    (fig,) = saved
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert bar.get_ylabel().startswith("Recall@1")
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["T: trained pair", "E: emergent pair"]
