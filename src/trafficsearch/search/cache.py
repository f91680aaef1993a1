"""Query-embedding cache: competition query files repeat a few hundred texts thousands of times."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from trafficsearch.models.onnx_text import query_encoder


def encode_queries(model: Any, texts: Sequence[str]) -> np.ndarray:
    """Query vectors of `model` as float32 numpy (what every TextCache stores); autocast on a GPU."""
    from trafficsearch.models.device import inference_precision

    fast = query_encoder(model)  # ONNX Runtime when TRAFFICSEARCH_QUERY_ENCODER=onnx
    if fast is not None:
        return fast(list(texts))

    with torch.inference_mode(), inference_precision(getattr(model, "device", "cpu")):
        return model.encode_texts(list(texts)).float().cpu().numpy()


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A bounded least-recently-used map with `cold()`: the one cache class of search (query vectors,
    re-ranking inputs). `load(key)` fills a miss in `get`."""

    def __init__(self, load: Callable[[K], V] | None = None, capacity: int = 4096) -> None:
        self._load = load
        self._store: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: K) -> bool:
        return key in self._store

    @contextmanager
    def cold(self) -> Iterator[None]:
        """Inside: the cache starts empty; after: exactly what was cached before is back. Latency probes
        measure cold queries without throwing away entries that later searches reuse."""
        with self._lock:
            saved, self._store = self._store, OrderedDict()
        try:
            yield
        finally:
            with self._lock:
                self._store = saved

    def _trim(self) -> None:
        while len(self._store) > self.capacity:
            self._store.popitem(last=False)

    def put(self, key: K, value: V) -> None:
        """Store a value computed outside (counted as a miss: it was not cached)."""
        self.misses += 1
        self._store[key] = value
        self._trim()

    def get(self, key: K) -> V:
        if key in self._store:
            self.hits += 1
            self._store.move_to_end(key)
            return self._store[key]
        assert self._load is not None, "an LRU without load() only serves what was put()"
        self.misses += 1
        value = self._load(key)
        self._store[key] = value
        self._trim()
        return value


class TextCache(LRU[str, np.ndarray]):
    """LRU map text -> float32 vector; `encode` is only called for texts not seen recently (in batches)."""

    def __init__(
        self, encode: Callable[[Sequence[str]], np.ndarray], capacity: int = 100_000, batch: int = 256
    ):
        super().__init__(None, capacity)
        self._encode = encode
        self.batch = batch

    def get(self, texts: Sequence[str]) -> np.ndarray:  # type: ignore[override]
        """[len(texts), D] vectors in input order."""
        return self.get_many(texts)

    def get_many(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._store]
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        fresh: dict[str, np.ndarray] = {}
        missing.sort(key=len)  # batches of similar length: encoders pad each batch to its longest text
        for start in range(0, len(missing), self.batch):
            chunk = missing[start : start + self.batch]
            vectors = np.asarray(self._encode(chunk), dtype=np.float32)
            fresh.update(zip(chunk, vectors, strict=True))
        with self._lock:
            for text, vector in fresh.items():
                self._store[text] = vector
            out = np.stack([fresh[t] if t in fresh else self._store[t] for t in texts])
            for text in texts:
                if text in self._store:
                    self._store.move_to_end(text)
            self._trim()
        return out
