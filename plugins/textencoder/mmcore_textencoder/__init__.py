"""A frozen sentence-transformers text encoder (fixed vocabulary of texts) with a trainable projection, for mmcore."""
