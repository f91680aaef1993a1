"""index: encode a gallery once per model into an on-disk index (fp16 vectors, FAISS, SQLite, manifest)."""

from trafficsearch.index.build import BuildResult, add_images, build_index, merge_index
from trafficsearch.index.store import IndexData, open_index
from trafficsearch.index.tune import TuneResult, tune_index_dir, tune_vectors

__all__ = [
    "BuildResult",
    "IndexData",
    "TuneResult",
    "add_images",
    "build_index",
    "merge_index",
    "open_index",
    "tune_index_dir",
    "tune_vectors",
]
