"""Vector stores behind one protocol: the on-disk FAISS index directory (the embedded default) and Milvus
(milvus-lite embedded, or a cluster by URI + token). Fusion and re-ranking stay above, in search/."""

from trafficsearch.index.stores.base import VectorStore
from trafficsearch.index.stores.factory import open_store

__all__ = ["VectorStore", "open_store"]
