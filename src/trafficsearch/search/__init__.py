"""search: the engine (text -> ranked images), its first stages (one index, fused) and candidate stages."""

from trafficsearch.search.engine import Hit, SearchEngine
from trafficsearch.search.stages import Candidates, Stage

__all__ = ["Candidates", "Hit", "SearchEngine", "Stage"]
