"""Using a trained run: the Python API, embed/index/search/export commands, and `mmcore new-plugin`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mmcore
from core_test_support import pip_install_target
from mmcore.testing import run_recipe, tiny_recipe


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("use")
    metrics = run_recipe(tiny_recipe(), root / "run")
    model = mmcore.load(root / "run")
    test = model.data().splits.test
    for m in ("text", "audio"):
        np.save(root / f"{m}.npy", test.inputs[m].numpy())
    return root, model, metrics


def test_api_and_command_line_embeddings_are_identical(trained, cli):
    root, model, _ = trained
    assert model.modalities == ("image", "text", "audio") and model.dim == 32
    api = model.encode("text", np.load(root / "text.npy"), batch_size=100)
    assert api.dtype == np.float32 and np.allclose(np.linalg.norm(api, axis=1), 1.0, atol=1e-5)
    status, _, err = cli("embed", root / "run", "--modality", "text", root / "text.npy", "--out", root / "t.npy")
    assert status == 0, err
    assert np.array_equal(np.load(root / "t.npy"), api)
    status, _, err = cli("embed", root / "run", "--modality", "text", root / "text.npy", "--out", root / "t.npy")
    assert status == 2 and "already exists" in err


def test_index_and_search_retrieve_at_the_runs_own_recall(trained, cli, capsys):
    root, _, metrics = trained
    status, out, err = cli("index", root / "run", "--modality", "audio", root / "audio.npy", "--out", root / "idx")
    assert status == 0, err
    assert json.loads(out)["count"] == 256
    status, _, err = cli("search", root / "idx", "--run", root / "run", "--modality", "text", root / "text.npy",
                         "-k", "10", "--out", root / "hits.npz")
    assert status == 0, err
    ids = np.load(root / "hits.npz")["ids"]
    recall_at_1 = float(np.mean(ids[:, 0] == np.arange(len(ids))))
    assert recall_at_1 == pytest.approx(metrics["retrieval/text->audio/R@1"], abs=1 / 256)
    assert float(np.mean((ids == np.arange(len(ids))[:, None]).any(1))) == pytest.approx(
        metrics["retrieval/text->audio/R@10"], abs=1 / 256)


def test_approximate_index_reports_its_recall_against_exact(trained, cli):
    root, _, _ = trained
    status, out, err = cli("index", root / "run", "--modality", "audio", root / "audio.npy", "--out", root / "ivf",
                           "--factory", "IVF8,Flat", "--nprobe", "8")
    assert status == 0, err
    assert json.loads(out)["recall@10_vs_exact"] == pytest.approx(1.0)  # nprobe = nlist: exhaustive


def test_an_export_format_whose_packages_are_missing_names_them_all_before_anything_is_written(trained, cli,
                                                                                             monkeypatch):
    import importlib.util

    root, _, _ = trained
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("onnx") else real(name, *a))
    status, _, err = cli("export", root / "run", "--format", "onnx", "--out", root / "onnx-export")
    assert status == 2 and "--format onnx needs onnx and onnxscript: pip install onnx onnxscript" in err, err
    assert not (root / "onnx-export").exists()


def test_torchscript_export_runs_without_mmcore_and_matches_encode(trained, cli):
    root, model, _ = trained
    status, _, err = cli("export", root / "run", "--format", "torchscript", "--out", root / "exported")
    assert status == 0, err
    code = (
        "import sys, json, numpy, torch\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'mmcore': raise ImportError('mmcore is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"encoder = torch.jit.load({str(root / 'exported' / 'text.pt')!r})\n"
        f"x = torch.from_numpy(numpy.load({str(root / 'text.npy')!r}))\n"
        f"numpy.save({str(root / 'exported.npy')!r}, encoder(x).detach().numpy())\n"
        "print('mmcore' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
    # tolerance: traced graph vs eager module, float32
    np.testing.assert_allclose(np.load(root / "exported.npy"), model.encode("text", np.load(root / "text.npy")),
                               atol=1e-5)


def test_loading_a_run_whose_plugin_is_missing_names_the_distribution(trained, tmp_path):
    root, _, _ = trained
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(root / "run"), str(run)], check=True)
    recipe = (run / "recipe.toml").read_text().replace('name = "pairwise"', 'name = "fancy_anchor"')
    (run / "recipe.toml").write_text(recipe)
    plugins = json.loads((run / "plugins.json").read_text())
    plugins.append({"distribution": "mmcore-fancy", "version": "1.2.3",
                    "components": {"anchor_strategies": ["fancy_anchor"]}})
    (run / "plugins.json").write_text(json.dumps(plugins))
    with pytest.raises(mmcore.RunLoadError, match=r"pip install mmcore-fancy==1\.2\.3"):
        mmcore.load(run)


@pytest.mark.parametrize("kind", ["encoder", "loss"])
def test_new_plugin_generates_a_package_that_installs_and_passes_its_own_test(cli, tmp_path, kind):
    status, out, err = cli("new-plugin", f"my_{kind}", "--kind", kind, "--out", tmp_path)
    assert status == 0, err
    package = tmp_path / f"mmcore-my-{kind}"
    assert {p.name for p in package.iterdir()} >= {"pyproject.toml", "README.md", "tests", f"mmcore_my_{kind}"}
    site = tmp_path / "site"
    env = dict(os.environ, CI="true", **pip_install_target([package], site))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
