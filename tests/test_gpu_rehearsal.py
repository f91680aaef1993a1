"""benchmarks/gpu_rehearsal.py runs end to end on the CPU with --tiny and writes a complete results file; a
spent budget still writes one; an out-of-memory config is retried once with gradient checkpointing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_rehearsal.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_rehearsal", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rehearsal() -> ModuleType:
    return _load()


@pytest.mark.slow
def test_tiny_run_writes_every_section(rehearsal: ModuleType, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    code = rehearsal.main(["--tiny", "--device", "cpu", "--out-dir", str(tmp_path), "--name", "r"])
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["tiny"] is True and result["device"]["cuda"] is False
    train = {row["config"]: row for row in result["train"]}
    assert list(train) == list(rehearsal.TRAIN_CONFIGS)
    precision = {r["config"]: r["precision"] for r in result["train"]}
    # the seed's recipes: A pure bf16, B and XLM-R fp16 + scaler, BLIP fp32 with checkpointing
    assert precision == {
        "vit-h-14-a": "pure_bf16",
        "vit-h-14-b": "fp16",
        "xlm-roberta-large-vit-h-14": "fp16",
        "blip-large": "fp32",
    }
    for row in train.values():
        assert row["status"] == "ok", row
        assert row["steps"] == 2 and row["batch"] == 8
        assert row["samples_per_s"] > 0 and row["loss_finite"] is True
        assert row["peak_rss_gib"] > 0
    assert train["blip-large"]["grad_checkpointing"] is True
    assert "xlm-roberta-large" in train["xlm-roberta-large-vit-h-14"]["model"]
    encode, rerank = result["encode"], result["rerank"]
    assert encode["status"] == "ok" and encode["images"] == 24 and encode["images_per_s"] > 0
    assert rerank["status"] == "ok" and rerank["pairs"] == 4 * 10 and rerank["pairs_per_s"] > 0
    md = (tmp_path / "r.md").read_text()
    for heading in ("## Training steps", "## Index encoding", "## ITM re-ranking", "Not a GPU run"):
        assert heading in md
    assert md.count("| ok |") == 6


def test_spent_budget_still_writes_the_file(rehearsal: ModuleType, tmp_path: Path) -> None:
    args = ["--tiny", "--device", "cpu", "--out-dir", str(tmp_path), "--name", "r", "--budget-s", "0"]
    assert rehearsal.main(args) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    statuses = [row["status"] for row in result["train"]] + [result["encode"]["status"]]
    statuses.append(result["rerank"]["status"])
    assert statuses == ["skipped (run budget spent)"] * 6
    assert [row["config"] for row in result["train"]] == list(rehearsal.TRAIN_CONFIGS)


def test_oom_is_retried_with_gradient_checkpointing(
    rehearsal: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool | None] = []

    def fake(name, args, device, deadline, keep, checkpointing):  # noqa: ANN001, ANN202
        calls.append(checkpointing)
        if checkpointing is None:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return {"config": name, "status": "ok", "grad_checkpointing": True}

    monkeypatch.setattr(rehearsal, "_train_once", fake)
    args = rehearsal.main.__globals__["argparse"].Namespace(tiny=True, work=tmp_path)
    row = rehearsal.train_part("vit-h-14-a", args, torch.device("cpu"), 0.0, {})
    assert calls == [None, True]
    assert row["status"] == "ok" and "gradient checkpointing" in row["note"]
    # a config that checkpoints already (BLIP) is not retried: the OOM is the answer
    calls.clear()
    row = rehearsal.train_part("blip-large", args, torch.device("cpu"), 0.0, {})
    assert calls == [None] and row["status"] == "oom"
