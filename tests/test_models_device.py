"""The `--device auto` rule and the inference precision rule (autocast on GPUs, fp32 on CPU)."""

from __future__ import annotations

import pytest
import torch

from trafficsearch.errors import ConfigError
from trafficsearch.models.device import inference_dtype, inference_precision, resolve_device


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device(None) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


def test_explicit_devices_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda:1") == "cuda:1"


def test_inference_dtype_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert inference_dtype("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert inference_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert inference_dtype("cuda:0") == torch.float16
    assert inference_dtype("mps") == torch.float16


def test_cpu_inference_stays_fp32() -> None:
    layer = torch.nn.Linear(4, 4)
    with inference_precision("cpu") as dtype:
        out = layer(torch.ones(2, 4))
    assert dtype is None and out.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_inference_autocasts_with_tf32() -> None:
    layer = torch.nn.Linear(4, 4).cuda()
    with inference_precision("cuda") as dtype:
        out = layer(torch.ones(2, 4, device="cuda"))
    assert dtype in (torch.bfloat16, torch.float16) and out.dtype == dtype
    assert torch.backends.cuda.matmul.allow_tf32
