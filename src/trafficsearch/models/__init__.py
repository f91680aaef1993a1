"""Models: families (open_clip, BLIP, attributes) behind one interface, loaded through `load_model`."""

from trafficsearch.models.base import RetrievalModel
from trafficsearch.models.factory import load_model

__all__ = ["RetrievalModel", "load_model"]
