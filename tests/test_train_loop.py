"""Tiny end-to-end training: the loss goes down, outputs land in the run dir, resume == uninterrupted,
and the frozen-trunk text cache gives the same loss as recomputing the trunk."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from trafficsearch.errors import ConfigError
from trafficsearch.models import load_model
from trafficsearch.testing.datasets import TINY_CONFIG
from trafficsearch.train.config import load_config
from trafficsearch.train.loop import train

torch.set_num_threads(1)


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def data(tiny_data):
    return tiny_data


def _cfg(data, *extra: str):
    return load_config(TINY_CONFIG, [f"data.root={data}", *extra])


def _train_losses(run) -> list[float]:
    rows = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in rows if json.loads(x)["type"] == "train"]


def test_tiny_training_lowers_loss_and_writes_run_dir(tmp_path, data) -> None:
    result = train(_cfg(data, "train.epochs=6"), tmp_path / "run", show_progress=False)
    assert result.finished and result.step == 18 and result.epoch == 6
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["type"] == "train"]
    assert len(losses) == 18
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    val = [r for r in rows if r["type"] == "val"]
    assert [r["epoch"] for r in val] == list(range(1, 7))
    assert 0.0 <= val[-1]["map_equal"] <= 1.0 and "vehicle" in val[-1]["results"]["equal"]["per_kind"]
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "curves.png",
        "last/weights.safetensors",
        "last/train_state.pt",
        "best/model.json",
    ):
        assert (run / name).is_file(), name
    assert "batch_size: 4" in (run / "config.yaml").read_text()
    best = load_model(run / "best")  # a training checkpoint loads through the uniform interface
    assert best.encode_texts(["This is a red Audi."]).shape == (1, best.embed_dim)
    with pytest.raises(ConfigError, match="--resume"):
        train(_cfg(data, "train.epochs=6"), run, show_progress=False)
    # fine-tuning starts from a checkpoint dir: the first loss continues where training left off
    again = train(
        _cfg(data, "train.epochs=1", f"model.pretrained={run / 'best'}"), tmp_path / "ft", show_progress=False
    )
    first = json.loads((again.run_dir / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert first < losses[0]


def test_resume_after_interruption_equals_uninterrupted(tmp_path, data) -> None:
    # save_every=2 (tiny-test.yaml); 3 steps per epoch: interrupting after step 5 resumes mid-epoch 2
    full = train(_cfg(data), tmp_path / "full", show_progress=False)

    def kill_after_5(step: int) -> None:
        if step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(_cfg(data, "train.save_every=1"), tmp_path / "cut", show_progress=False, on_step=kill_after_5)
    state = torch.load(tmp_path / "cut" / "last" / "train_state.pt", weights_only=False)
    assert (state["step"], state["epoch"], state["position"]) == (5, 1, 2)
    with pytest.raises(ConfigError) as err:
        train(_cfg(data, "optim.lr=0.1"), tmp_path / "cut", resume=True, show_progress=False)
    assert err.value.field == "optim.lr"
    resumed = train(_cfg(data, "train.save_every=1"), tmp_path / "cut", resume=True, show_progress=False)
    assert resumed.step == full.step == 12 and resumed.finished

    a = load_file(str(tmp_path / "full" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "cut" / "last" / "weights.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["type"] == "train"
    ]
    assert steps == list(range(1, 13))  # no duplicated log lines after the resume


def test_text_cache_matches_recomputed_frozen_trunk(tmp_path, data) -> None:
    common = ["model.lock_text=true", "train.epochs=2", "train.log_every=1"]
    cached = train(_cfg(data, *common, "model.cache_text_features=true"), tmp_path / "c", show_progress=False)
    plain = train(_cfg(data, *common, "model.cache_text_features=false"), tmp_path / "p", show_progress=False)
    lc, lp = _train_losses(cached.run_dir), _train_losses(plain.run_dir)
    assert len(lc) == len(lp) == 6
    assert lc == pytest.approx(lp, rel=1e-4, abs=1e-5)
    # the frozen trunk really is frozen (same seed -> same init as a fresh model), the projection trained
    torch.manual_seed(0)
    init = load_model("open_clip:ts-tiny-test").model.state_dict()
    w = load_file(str(cached.run_dir / "last" / "weights.safetensors"))
    assert torch.equal(w["token_embedding.weight"], init["token_embedding.weight"])
    assert torch.equal(
        w["transformer.resblocks.0.mlp.c_fc.weight"], init["transformer.resblocks.0.mlp.c_fc.weight"]
    )
    assert not torch.equal(w["text_projection"], init["text_projection"])


def test_runs_sharing_a_text_cache_file_encode_each_caption_once(tmp_path, data, monkeypatch) -> None:
    from trafficsearch.train.text_cache import TextFeatureCache

    encoded: list[int] = []
    original = TextFeatureCache.add

    def counting_add(self, texts, progress=None):  # noqa: ANN001, ANN202 - mirrors TextFeatureCache.add
        encoded.append(len([t for t in dict.fromkeys(texts) if t not in self.index]))
        return original(self, texts, progress)

    monkeypatch.setattr(TextFeatureCache, "add", counting_add)
    shared = tmp_path / "shared" / "features.pt"
    common = [
        "model.lock_text=true",
        "model.cache_text_features=true",
        "train.epochs=1",
        "train.log_every=1",
        f"model.text_cache_file={shared}",
    ]
    first = train(_cfg(data, *common), tmp_path / "a", show_progress=False)
    first_count = sum(encoded)
    assert first_count > 0 and shared.is_file()
    assert not (first.run_dir / "text_features.pt").exists()  # kept in the shared file instead
    encoded.clear()
    second = train(_cfg(data, *common), tmp_path / "b", show_progress=False)
    assert sum(encoded) == 0  # every caption came from the file the first run wrote
    assert _train_losses(first.run_dir) == pytest.approx(_train_losses(second.run_dir), rel=1e-6)


def test_minilm_text_cache_rows_match_full_text_tower() -> None:
    from trafficsearch.models.clip import lock_text, text_project
    from trafficsearch.train.text_cache import TextFeatureCache

    model = load_model("open_clip:ts-minilm-vit-s64")
    lock_text(model.model, 0)
    texts = [
        "A Bus.",
        "A female pedestrian who is a minor, and is standing sideways. She is in a skirt or dress.",
        "This is a white Audi.",
    ]
    cache = TextFeatureCache(model, batch_size=2)
    cache.add(texts)
    assert len(cache) == 3
    with torch.no_grad():
        cached = text_project(model.model, cache.rows(texts[::-1]))
        model.model.eval()
        full = model.model.encode_text(model.tokenize(texts[::-1]))
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-5)
