"""mmcore-media: bind image, audio and text files through pretrained towers (timm, transformers, torchaudio,
open_clip), from a manifest of media files. See README.md."""
