"""UNITE's modal-aware masked contrastive loss (MAMCL) for mmcore, with a mixed-target retrieval task to test it
(registered through the ``mmcore`` entry-point group; see ``mmcore_mamcl.plugin``)."""
