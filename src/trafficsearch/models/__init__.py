"""Models: open_clip architectures behind one RetrievalModel interface, checkpoints, a small registry."""

from trafficsearch.models.base import RetrievalModel, load_model

__all__ = ["RetrievalModel", "load_model"]
