"""Datasets in and out: readers, writers and validation. Torch-free."""
