"""Raw media through shards: the media plugin's demo set (PNG scans, spoken words, captions) written by ``mmcore
shard`` reads back equal, and the media encoders take what the shards give (``mmcore validate`` runs the probe step
through their preprocessing). Skipped without the media plugin's demo command or espeak-ng."""

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("litdata", reason="the shards tests need litdata: pip install 'mmcore-shards[litdata]'")

import mmcore  # noqa: E402
from mmcore.testing import cli  # noqa: E402

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "media_imagebind.toml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    registry = mmcore.get_registry()
    if "manifest" not in registry.names("datasets"):
        pytest.skip("needs the media plugin: pip install -e 'plugins/media[image,audio,text]'")
    if shutil.which("espeak-ng") is None:
        pytest.skip("the demo set's audio needs espeak-ng: apt-get install espeak-ng")
    out = tmp_path_factory.mktemp("media") / "demo"
    status, _, err = cli("media-demo", out, "--per-class", "3")
    assert status == 0, err
    return out / "manifest.csv"


def test_images_audio_and_text_read_back_from_shards_as_the_manifest_gives_them(demo, tmp_path):
    shards = tmp_path / "shards"
    status, _, err = cli("shard", RECIPE, "--out", shards, "--set", f"dataset.path={demo}")
    assert status == 0, err
    registry = mmcore.get_registry()
    recipe, _ = mmcore.load_recipe(RECIPE, [f"dataset.path={demo}"])
    manifest = registry.build("datasets", "manifest", recipe.dataset.config, mmcore.DatasetContext(), "dataset")
    from mmcore_shards.plugin import ShardsConfig

    read = registry.build("datasets", "shards", ShardsConfig(path=str(shards)), mmcore.DatasetContext(), "dataset")
    assert read.inputs == manifest.inputs and read.prompts == manifest.prompts
    assert read.class_names == manifest.class_names
    for split in ("train", "test"):
        source, stored = getattr(manifest, split), getattr(read, split)
        assert len(source) == len(stored)
        where = {stored[j]["id"]: j for j in range(len(stored))}  # train is written in a random order
        for i in range(len(source)):
            a = source[i]
            b = stored[where[a["id"]]]
            assert (a["id"], a["label"], a["present"]) == (b["id"], b["label"], b["present"])
            for m, value in a["inputs"].items():
                got = b["inputs"][m]
                if value is None:
                    assert got is None, (split, i, m)
                elif m == "image":
                    assert np.array_equal(np.asarray(value), got), (split, i)
                elif m == "audio":
                    assert value[1] == got[1] and np.array_equal(value[0], got[0]), (split, i)
                else:
                    assert value == got, (split, i, m)
    recipe_file = tmp_path / "on_shards.toml"
    recipe_file.write_text(f'extends = "{RECIPE}"\n[dataset]\nname = "shards"\npath = "{shards}"\n')
    status, _, err = cli("validate", recipe_file)  # the probe step preprocesses stored media through the towers
    assert status == 0, err
