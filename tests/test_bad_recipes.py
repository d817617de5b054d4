"""A corpus of malformed recipes (tests/bad_recipes/*.toml, expected message in the matching .expect file):
each is rejected with exit status 2, a message naming the TOML path, and nothing written."""

from pathlib import Path

import pytest

CORPUS = Path(__file__).with_name("bad_recipes")
CASES = sorted(CORPUS.glob("*.toml"))


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 50


@pytest.mark.parametrize("recipe", CASES, ids=[c.stem for c in CASES])
def test_bad_recipe_is_rejected_with_its_path_and_nothing_written(cli, tmp_path, recipe):
    before = sorted(CORPUS.iterdir())
    expected = recipe.with_suffix(".expect").read_text().strip()
    for command in ("validate", "run"):
        status, out, err = cli(command, recipe, cwd=tmp_path)
        assert status == 2, (command, out, err)
        assert expected in err, err
        assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
    assert sorted(CORPUS.iterdir()) == before
