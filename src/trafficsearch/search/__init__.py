"""search: the engine (text -> ranked images) and its candidate stages (fusion and re-ranking hooks)."""

from trafficsearch.search.engine import Hit, SearchEngine
from trafficsearch.search.stages import Candidates, Stage

__all__ = ["Candidates", "Hit", "SearchEngine", "Stage"]
