"""SigLIP's pairwise sigmoid loss for mmcore (registered through the ``mmcore`` entry-point group; see
``mmcore_siglip.plugin``)."""
