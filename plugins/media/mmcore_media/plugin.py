"""The components this plugin registers. Each module imports only its attrs config classes at import time;
torch and the media libraries (timm, transformers, torchaudio, open_clip, peft) are imported inside the builds,
so ``mmcore --help`` stays fast and a missing extra fails only the recipe that needs it, naming the pip line."""

from __future__ import annotations

import importlib
import importlib.util

import mmcore

from . import demo, manifest

ENCODER_MODULES = ("image", "audio", "clip", "text", "hf_audio")


def _components(module_name: str) -> list:
    module = importlib.import_module(f"{__package__}.{module_name}")
    return list(module.COMPONENTS)


@mmcore.hookimpl
def mmcore_encoders():
    return [component for name in ENCODER_MODULES if importlib.util.find_spec(f"{__package__}.{name}")
            for component in _components(name)]


@mmcore.hookimpl
def mmcore_datasets():
    return list(manifest.DATASETS)


@mmcore.hookimpl
def mmcore_commands(subparsers):
    demo.add_commands(subparsers)
