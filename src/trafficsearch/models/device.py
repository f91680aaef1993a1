"""Where and in which precision inference runs: one `--device auto` rule and one autocast rule.

`auto` picks the fastest device present (CUDA, then Apple MPS, then CPU), so a GPU box is used without a
flag; inference on a GPU runs under autocast (bf16 where the GPU supports it, else fp16) with TF32 matmuls,
and on a CPU in fp32 (CPU autocast is slower than fp32 there and changes the demo's numbers).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from trafficsearch.errors import ConfigError


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device | None = "auto", field: str = "--device") -> str:
    """'auto' -> 'cuda' | 'mps' | 'cpu' by availability; an explicit device is checked, not changed."""
    text = "auto" if name is None else str(name).strip()
    if text == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"unknown device {text!r}: expected auto, cpu, cuda, cuda:N or mps", field=field
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {text!r}: CUDA is not available (use --device auto)", field=field)
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"device {text!r}: MPS is not available (use --device auto)", field=field)
    return text


def inference_dtype(device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype for inference on `device`: bf16/fp16 on CUDA, fp16 on MPS, None (fp32) on CPU."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return None


@contextmanager
def inference_precision(device: str | torch.device) -> Iterator[torch.dtype | None]:
    """Encode under autocast (and TF32 matmuls) on a GPU; a no-op in fp32 on CPU. Yields the dtype used."""
    dtype = inference_dtype(device)
    if dtype is None:
        yield None
        return
    kind = torch.device(device).type
    if kind == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    with torch.autocast(kind, dtype=dtype):
        yield dtype
