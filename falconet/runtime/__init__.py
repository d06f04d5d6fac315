"""Torch-free inference: ``falconet.runtime.load(path)`` -> Predictor."""
from falconet.runtime.predictor import Predictor, load

__all__ = ["Predictor", "load"]
