"""Shared fixtures of the mmcore-media tests.

``bert_dir``: a random 2-layer, 16-wide BERT and its tokenizer saved as a transformers model directory (hidden
dropout 0.1, transformers' default), built once per session.

``media_demo``: the path of the ``manifest.csv`` of a small real demo set (:func:`mmcore_media.demo.build_demo`,
``DEMO_PER_CLASS`` scans per digit, seed 0: 50 train, 10 val, 20 test rows), built once per test session into a
temporary folder. Tests must not modify it. Skipped (with the apt line) when espeak-ng is not installed.
"""

from __future__ import annotations

import shutil

import pytest

DEMO_PER_CLASS = 8


@pytest.fixture(scope="session")
def media_demo(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("the demo set's audio needs espeak-ng: apt-get install espeak-ng")
    from mmcore_media.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("media_demo") / "demo", per_class=DEMO_PER_CLASS, seed=0)


BERT_WORDS = "[PAD] [UNK] [CLS] [SEP] [MASK] a dog cat barking the photo of sings loud ##ly bird".split()


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    pytest.importorskip("transformers", reason='pip install "mmcore-media[text]"')
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    directory = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(BERT_WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(directory)
    BertTokenizer(vocab={w: i for i, w in enumerate(BERT_WORDS)}).save_pretrained(directory)
    return str(directory)
