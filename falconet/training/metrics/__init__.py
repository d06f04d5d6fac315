"""Evaluation metrics, numpy only, so the server can recompute them at any threshold."""
