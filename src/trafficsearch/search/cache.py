"""Query-embedding cache: competition query files repeat a few hundred texts thousands of times."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def encode_queries(model: Any, texts: Sequence[str]) -> np.ndarray:
    """Query vectors of `model` as float32 numpy (what every TextCache stores); autocast on a GPU."""
    from trafficsearch.models.device import inference_precision

    with torch.inference_mode(), inference_precision(getattr(model, "device", "cpu")):
        return model.encode_texts(list(texts)).float().cpu().numpy()


class TextCache:
    """LRU map text -> float32 vector; `encode` is only called for texts not seen recently."""

    def __init__(
        self, encode: Callable[[Sequence[str]], np.ndarray], capacity: int = 100_000, batch: int = 256
    ):
        self._encode = encode
        self._store: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity
        self.batch = batch
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    @contextmanager
    def cold(self) -> Iterator[None]:
        """Inside: the cache starts empty; after: exactly what was cached before is back. Latency probes
        measure cold queries without throwing away vectors that later searches reuse."""
        with self._lock:
            saved, self._store = self._store, OrderedDict()
        try:
            yield
        finally:
            with self._lock:
                self._store = saved

    def get(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), D] vectors in input order."""
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
            while len(self._store) > self.capacity:
                self._store.popitem(last=False)
        return out
