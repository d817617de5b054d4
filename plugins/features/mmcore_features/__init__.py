"""Users' own precomputed features (one ``.npy`` per modality, sparse presence) streamed from disk, for mmcore."""
