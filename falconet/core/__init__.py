"""Torch-free pieces shared by every room: images, preprocessing, manifest, labels, types, errors."""
from falconet.core.errors import FalconetError
from falconet.core.prediction import BoundingBox, Prediction, to_custom_vision_json

__all__ = ["FalconetError", "BoundingBox", "Prediction", "to_custom_vision_json"]
