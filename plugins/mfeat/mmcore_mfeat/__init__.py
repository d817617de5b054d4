"""The UCI Multiple Features handwritten digits (six feature views = six modalities) for mmcore."""
