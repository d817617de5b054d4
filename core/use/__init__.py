"""Using trained runs: embedding, indexing, searching, exporting, and reports of runs."""
