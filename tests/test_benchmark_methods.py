"""benchmarks/methods.py: each setting is one mmcore study (``mmcore run RECIPE --seeds ...``), its runs read back
by seed; ``--seeds`` takes a count, a range or a list; method - baseline is paired by seed, with a 95% t-interval."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def methods():
    spec = importlib.util.spec_from_file_location("benchmark_methods", ROOT / "benchmarks" / "methods.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("text, seeds", [("3", [0, 1, 2]), ("10", list(range(10))), ("0-9", list(range(10))),
                                         ("10-12", [10, 11, 12]), ("0,1,2", [0, 1, 2]), ("0-2,7", [0, 1, 2, 7]),
                                         ("5-5", [5])])
def test_seeds_are_a_count_a_range_or_a_list(methods, text, seeds):
    assert methods.parse_seeds(text) == seeds


@pytest.mark.parametrize("text, message", [("0", "at least 1"), ("3-1", "empty"), ("a", "'a' is not a seed"),
                                           ("1,1", "seed 1 is given twice"), ("0-2,2", "seed 2 is given twice")])
def test_bad_seeds_are_refused(methods, text, message):
    with pytest.raises(ValueError, match=message):
        methods.parse_seeds(text)


def test_the_interval_is_a_t_interval_and_the_table_matches_without_scipy(methods):
    mean, half = methods.paired_interval([0.1, 0.2, 0.3])
    # by hand: mean 0.2, sd 0.1, t(0.975, 2) = 4.303 -> 4.303 * 0.1 / sqrt(3)
    assert mean == pytest.approx(0.2) and half == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-3)
    assert methods.paired_interval([0.5]) == (0.5, None)
    for df in (1, 2, 9, 29):
        assert methods.T975[df - 1] == pytest.approx(methods.t975(df), abs=1e-3)


def test_differences_are_paired_by_seed_not_by_position(methods):
    method = {0: {"claim/R@1": 0.5}, 1: {"claim/R@1": 0.7}}
    base = {1: {"claim/R@1": 0.6}, 0: {"claim/R@1": 0.1}}  # another order: a positional pairing gives -0.1, 0.6
    # by seed: 0.4 and 0.1, mean 0.25, sd 0.3 / sqrt(2), t(0.975, 1) = 12.706 -> half-width 12.706 * 0.15
    half = 12.706 * 0.15
    assert methods.difference_cell(method, base, "claim/R@1") == f"{0.25:+.3f} [{0.25 - half:+.3f}, {0.25 + half:+.3f}]"
    results = {("d", "s", "base"): base, ("d", "s", "method"): method}
    assert methods.difference_table(results, "d")[2].startswith("| s | method - base | 2 | +0.250 [")


def test_a_setting_runs_as_one_study_and_reads_each_seed_back(methods, tmp_path):
    tiny = ["dataset.train_size=256", "dataset.val_size=64", "dataset.test_size=64", "trainer.max_epochs=1",
            "trainer.batch_size=64", "embed_dim=16"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = methods.run_setting("imagebind.toml", tiny, [3, 5], tmp_path / "study", methods.without("image"))
    finally:
        torch.set_num_threads(threads)
    assert sorted(runs) == [3, 5]
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == ["seed-3", "seed-5", "summary.json",
                                                                        "summary.md"]
    for metrics in runs.values():
        # claim pairs: text<->audio (no image); anchor pairs: the four with image
        assert metrics["claim/R@1"] == pytest.approx(
            (metrics["retrieval/text->audio/R@1"] + metrics["retrieval/audio->text/R@1"]) / 2)
        anchor = ["image->text", "text->image", "image->audio", "audio->image"]
        assert metrics["kept/R@1"] == pytest.approx(sum(metrics[f"retrieval/{p}/R@1"] for p in anchor) / 4)
        assert metrics["knn/claim/acc"] == pytest.approx((metrics["knn/text/acc"] + metrics["knn/audio/acc"]) / 2)
    assert runs[3]["claim/R@1"] != runs[5]["claim/R@1"] or runs[3]["kept/R@1"] != runs[5]["kept/R@1"]
    # a study that fails (a bad override) is reported with mmcore's message, not as missing files
    with pytest.raises(RuntimeError, match="optimizer.lrr"):
        methods.run_setting("imagebind.toml", [*tiny, "optimizer.lrr=1"], [0], tmp_path / "bad", methods.without("image"))


def test_every_mfeat_view_is_the_anchor_in_turn_and_centrobind_is_one_study(methods):
    """Issue 18's mfeat rows: for each of the six views, all views paired (fixed anchor, CentroBind) and sparse
    pairing with only anchor-X pairs (fixed anchor, EmergentBridge in both readings, the proxy by one rule); one
    text-paired setting scored by zero-shot from prompts. CentroBind's all-paired rows are the same study (its runs
    do not depend on the anchor), each scored under its anchor's claim."""
    rows = [row for row in methods.SETTINGS if row[0] == "mfeat"]
    for view in methods.MFEAT_VIEWS:
        paired = [row for row in rows if row[1] == f"all views paired, anchor {view}"]
        assert [row[2] for row in paired] == ["imagebind", "centrobind (leave_one_out)"]
        assert f"anchor.anchor={view}" in paired[0][4]
        sparse = [row for row in rows if row[1] == f"sparse pairing ({view}-X only)"]
        assert [row[2].split(" (")[0] for row in sparse] == ["imagebind", "emergentbridge", "emergentbridge"]
        pairing = next(item for item in sparse[0][4] if item.startswith("dataset.pairing="))
        assert pairing.count("[") == 6 and pairing.count(f'"{view}"') == 5  # view-X for the five others
        proxy = methods.mfeat_proxy(view)
        assert proxy != view and f"anchor.proxy={proxy}" in sparse[1][4]
        assert 'anchor.projection="loss"' in sparse[1][4] and 'anchor.projection="gradient"' in sparse[2][4]
        assert methods.without(view).pairs("fou" if view != "fou" else "fac", "kar" if view != "kar" else "zer")
        assert not methods.without(view).pairs(view, "pix" if view != "pix" else "fou")
    studies = {(row[3], tuple(row[4])) for row in rows if row[2] == "centrobind (leave_one_out)"}
    assert len(studies) == 1
    text = [row for row in rows if row[3] == "mfeat_text_zero_shot.toml"]
    assert len(text) == 3
    # zero-shot from prompts: the views never paired with text, each classified by its nearest caption prototype
    metrics = {"prototypes/fou->text/acc": 0.5, "prototypes/mor->text/acc": 0.3, "prototypes/pix->text/acc": 0.9,
               "prototypes/text->fou/acc": 0.7}
    assert methods.claim_metrics(metrics, text[0][5])["prompts/claim/acc"] == pytest.approx(0.4)
    assert "prompts/claim/acc" not in methods.claim_metrics(metrics, methods.without("pix"))
