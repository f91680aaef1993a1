"""The demo's fusion-weight fit on its dev split (experiments/demo.fit_weights_on_dev): fitted weights are
used only when they beat equal weights on held-out folds of dev by more than the folds' spread; a fit that
chases noise falls back to equal weights, and results.json / the printed lines say which and why."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from trafficsearch.data.labels import write_labels
from trafficsearch.experiments import DemoPlan, ModelCache, SplitData, fit_summary, fit_weights_on_dev
from trafficsearch.experiments.demo import fit_lines, index_split
from trafficsearch.testing.color import ColorModel

torch.set_num_threads(1)


class NoiseModel(ColorModel):
    """A member that knows nothing: images and texts land on seeded random directions."""

    def __init__(self, seed: int) -> None:
        super().__init__(0)
        self.seed, self.name = seed, f"noise-{seed}"
        rng = np.random.default_rng(seed)
        self.projection = torch.from_numpy(rng.standard_normal((3, 8)).astype(np.float32))

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        rgb = pixels.float().mean(dim=(2, 3)) - 0.5
        return torch.nn.functional.normalize(rgb @ self.projection, dim=1)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        rows = [np.random.default_rng([zlib.crc32(t.encode()), self.seed]).standard_normal(8) for t in texts]
        return torch.nn.functional.normalize(torch.tensor(np.array(rows), dtype=torch.float32), dim=1)

    def manifest(self) -> dict:
        return {**super().manifest(), "name": self.name, "checkpoint_sha256": f"noise-{self.seed}"}


@pytest.fixture(scope="module")
def dev(color_vehicles, tmp_path_factory: pytest.TempPathFactory) -> SplitData:
    """48 colour vehicles (6 per colour, relevant to each other), each captioned in its own words, as real
    queries are: a noise member's luck on one text tells nothing about another."""
    vehicles = color_vehicles(48)
    records = [
        replace(r, text=f"This is a {r.vehicle.color} Audi, number {i}.")
        for i, r in enumerate(vehicles.records)
    ]
    labels = tmp_path_factory.mktemp("dev") / "labels.txt"
    write_labels(records, labels)
    return SplitData("dev", records, vehicles.images, labels)


def _fit(tmp_path: Path, dev: SplitData, models: dict[str, object], plan: DemoPlan) -> dict:
    cache = ModelCache()
    checkpoints = {name: tmp_path / f"ckpt-{name}" for name in models}
    for name, model in models.items():
        cache.models[str(checkpoints[name].resolve())] = model
    members = index_split(tmp_path, dev, checkpoints, cache, workers=0, itm_tokens=False)
    fit = fit_weights_on_dev(tmp_path, dev, members, cache, plan)
    return {"fit": fit, "summary": fit_summary(fit, list(models), plan)}


PLAN = DemoPlan(dev=48, fit_folds=4, fit_regularise=0.0, fit_min_gain=0.0)


def test_a_fit_that_does_not_beat_the_folds_spread_falls_back_to_equal_weights(
    tmp_path: Path, dev: SplitData
) -> None:
    got = _fit(tmp_path, dev, {f"noise{s}": NoiseModel(s) for s in (1, 2, 3)}, PLAN)
    fit, summary = got["fit"], got["summary"]
    folds = summary["folds"]
    assert folds["folds"] == 4
    assert folds["fitted"] != folds["equal"]  # the search moved off equal weights on the training folds...
    assert not folds["keep"] and folds["mean_gain"] <= max(folds["spread"], folds["margin"])  # ...in vain
    assert fit.weights == [1.0, 1.0, 1.0] and fit.kind_weights is None  # the demo fuses with equal weights
    assert summary["kept"] is False and summary["kind_weights"] == {}
    assert summary["dev_map_official"] == summary["dev_equal_weights"]
    lines = "\n".join(fit_lines(summary))
    assert "equal weights kept" in lines and "held-out dev mAP@10 on 4 folds" in lines
    assert "weights used: all: noise1 1, noise2 1, noise3 1" in lines


def test_a_fit_that_transfers_across_the_folds_is_kept(tmp_path: Path, dev: SplitData) -> None:
    got = _fit(tmp_path, dev, {"color": ColorModel(0), "noise": NoiseModel(1)}, PLAN)
    fit, summary = got["fit"], got["summary"]
    folds = summary["folds"]
    assert folds["keep"] and folds["mean_gain"] > folds["spread"]
    assert all(f > e for f, e in zip(folds["fitted"], folds["equal"], strict=True))
    assert fit.weights[1] == 0.0 or (fit.kind_weights or {}).get("vehicle", [1, 1])[1] == 0.0  # noise off
    assert summary["kept"] is True and summary["dev_map_official"] > summary["dev_equal_weights"]
    assert "fitted weights kept" in "\n".join(fit_lines(summary))
    # a margin larger than any gain sends even a real improvement back to equal weights
    strict = _fit(tmp_path / "strict", dev, {"color": ColorModel(0), "noise": NoiseModel(1)},
                  DemoPlan(dev=48, fit_folds=4, fit_margin=2.0))  # fmt: skip
    assert strict["summary"]["kept"] is False and strict["fit"].weights == [1.0, 1.0]
