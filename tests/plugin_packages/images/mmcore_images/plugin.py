"""A third-party plugin with inputs that are not feature vectors: ``[3, 8, 8]`` images and token ids with a mask.

Dataset ``tiny_images``: each sample's class draws a colour pattern (image) and a short "caption" of class tokens
(text: ``{"ids": int64 [6], "mask": bool [6]}``). Every present image has the marker value 1.0 at pixel
``[0, 0, 0]``; absent rows are zeros. Encoder ``tiny_conv`` refuses any row without the marker, so a run proves that
absent rows never reach an encoder. Encoder ``token_bag``: a masked mean of token embeddings.
"""

import attrs

import mmcore


@attrs.frozen
class TinyImagesConfig:
    train_size: int = 256
    val_size: int = 64
    test_size: int = 128
    classes: int = 4
    image_only_fraction: float = 0.3  # samples without text
    text_only_fraction: float = 0.3  # samples without an image


def _split(config, size, generator):
    import torch

    labels = torch.randint(0, config.classes, (size,), generator=generator)
    patterns = torch.randn(config.classes, 3, 8, 8, generator=torch.Generator().manual_seed(99))
    images = patterns[labels] + 0.8 * torch.randn(size, 3, 8, 8, generator=generator)
    images[:, 0, 0, 0] = 1.0  # the marker of a real image
    words = torch.randint(1, 50, (config.classes, 6), generator=torch.Generator().manual_seed(98))
    ids = words[labels].clone()
    noise = torch.rand(size, 6, generator=generator) < 0.2
    ids[noise] = torch.randint(1, 50, (int(noise.sum()),), generator=generator)
    lengths = torch.randint(3, 7, (size,), generator=generator)
    mask = torch.arange(6)[None, :] < lengths[:, None]
    draw = torch.rand(size, generator=generator)
    has_image = draw >= config.text_only_fraction
    has_text = draw < 1.0 - config.image_only_fraction
    return mmcore.TensorSplit({"image": images, "text": {"ids": ids * mask, "mask": mask}},
                              {"image": has_image, "text": has_text}, labels)


def build_tiny_images(config, context: mmcore.DatasetContext):
    import torch

    generator = torch.Generator().manual_seed(context.seed)
    train, val, test = (_split(config, n, generator) for n in (config.train_size, config.val_size, config.test_size))
    inputs = {"image": mmcore.InputSpec((3, 8, 8)),
              "text": mmcore.InputSpec(fields={"ids": mmcore.InputSpec((6,), "int64"),
                                               "mask": mmcore.InputSpec((6,), "bool")})}
    return mmcore.DatasetSplits(train, val, test, inputs, frozenset({frozenset(("image", "text"))}),
                                tuple(f"class {i}" for i in range(config.classes)))


@attrs.frozen
class TinyConvConfig:
    channels: int = 8


@attrs.frozen
class TokenBagConfig:
    vocabulary: int = 64


def build_tiny_conv(config, context: mmcore.EncoderContext):
    from .encoders import TinyConv

    return TinyConv(context.input.shape, config.channels, context.embed_dim)


def build_token_bag(config, context: mmcore.EncoderContext):
    from .encoders import TokenBag

    return TokenBag(config.vocabulary, context.embed_dim)


@mmcore.hookimpl
def mmcore_datasets():
    return [mmcore.Component("tiny_images", TinyImagesConfig, build_tiny_images),
            mmcore.Component("tiny_captions", TinyCaptionsConfig, build_tiny_captions)]


@mmcore.hookimpl
def mmcore_encoders():
    return [mmcore.Component("tiny_conv", TinyConvConfig, build_tiny_conv),
            mmcore.Component("token_bag", TokenBagConfig, build_token_bag),
            mmcore.Component("char_bag", CharBagConfig, build_char_bag)]


COLOURS = ("red", "green", "blue", "yellow")


class CaptionSplit:
    """Items ``{"inputs": {"feat": [8] float, "caption": str | None}, ...}``: raw captions beside feature vectors.
    Every fifth captioned sample has an undecodable caption: it is dropped (absent) and counted as skipped."""

    def __init__(self, size: int, seed: int, caption_fraction: float):
        import torch

        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, len(COLOURS), (size,), generator=generator)
        centres = torch.randn(len(COLOURS), 8, generator=torch.Generator().manual_seed(7))
        self.feat = centres[self.labels] + 0.5 * torch.randn(size, 8, generator=generator)
        self.has_caption = torch.rand(size, generator=generator) < caption_fraction

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        import torch

        label = int(self.labels[i])
        caption = f"a {COLOURS[label]} square" if bool(self.has_caption[i]) else None
        skipped = 0
        if caption is not None and i % 5 == 0:
            caption, skipped = None, 1  # stands for a file that failed to decode
        item = {"inputs": {"feat": self.feat[i], "caption": caption},
                "present": {"feat": torch.tensor(True), "caption": torch.tensor(caption is not None)},
                "label": label, "id": i}
        if skipped:
            item["skipped"] = skipped
        return item


@attrs.frozen
class TinyCaptionsConfig:
    size: int = 240
    caption_fraction: float = 0.6


def build_tiny_captions(config, context: mmcore.DatasetContext):
    splits = [CaptionSplit(config.size, context.seed * 10 + k, config.caption_fraction) for k in range(3)]
    return mmcore.DatasetSplits(*splits, {"feat": 8, "caption": mmcore.InputSpec.raw("text")},
                                frozenset({frozenset(("feat", "caption"))}), COLOURS, prompts=("a {} square",))


@attrs.frozen
class CharBagConfig:
    length: int = 8


def build_char_bag(config, context: mmcore.EncoderContext):
    from .encoders import CharBag

    return CharBag(context.embed_dim, config.length)

