"""The DDP pieces one process can check: gradient buckets go out DURING backward (overlap) and average
exactly, the process group gets train.dist_timeout_s, checkpoints are the state at save time although they
are written in the background, and batches augmented in DataLoader workers equal in-process ones."""

from __future__ import annotations

import json
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as tdist
from safetensors.torch import load_file

from trafficsearch.testing.datasets import TINY_CONFIG, make_dataset
from trafficsearch.train import dist as dist_mod
from trafficsearch.train.checkpoints import STATE_FILE, CheckpointSaver
from trafficsearch.train.clip_task import ClipTask
from trafficsearch.train.config import load_config
from trafficsearch.train.dist import DistInfo, GradReducer
from trafficsearch.train.loop import train

torch.set_num_threads(1)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_buckets_are_reduced_during_backward_and_averaged() -> None:
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 8))
        params = list(net.parameters())
        # a one-process group stands in for two ranks: the sum is this rank's gradient, the "mean" half
        reducer = GradReducer(params, DistInfo(rank=0, world_size=2), bucket_mb=64 * 64 * 4 / 2**20)
        assert len(reducer.buckets) >= 2
        x = torch.randn(5, 64)
        expected = torch.autograd.grad(net(x).square().sum(), params)
        reducer.arm()
        net(x).square().sum().backward()
        assert reducer.next == len(reducer.buckets)  # every bucket was launched from the hooks, in backward
        assert len(reducer.works) == len(reducer.buckets)
        reducer.finish()
        for p, g in zip(params, expected, strict=True):
            torch.testing.assert_close(p.grad, g / 2, rtol=0, atol=0)
        # an unarmed backward (an early micro-batch of an accumulated step) launches nothing
        net(x).sum().backward()
        assert reducer.works == [] and reducer.next == 0
    finally:
        tdist.destroy_process_group()


def test_process_group_gets_the_configured_timeout(monkeypatch) -> None:
    seen = {}
    monkeypatch.setattr(dist_mod.tdist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist_mod.tdist, "init_process_group", lambda **kw: seen.update(kw))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    info = dist_mod.init_distributed("cpu", timeout_s=7)
    assert info == DistInfo(rank=1, world_size=2, local_rank=0)
    assert seen == {"backend": "gloo", "timeout": timedelta(seconds=7)}
    assert load_config(None, ["train.dist_timeout_s=7"]).train.dist_timeout_s == 7.0


def test_background_checkpoint_holds_the_state_at_save_time(tmp_path) -> None:
    task = ClipTask.create(load_config(TINY_CONFIG), torch.device("cpu"))
    saver = CheckpointSaver(tmp_path, task, "a: 1\n", enabled=True, background=True)
    assert saver.background
    before = {k: v.clone() for k, v in task.module.state_dict().items()}
    state = {"step": 3, "moments": torch.ones(4)}
    saver.save("last", state)
    with torch.no_grad():  # training goes on while the thread writes
        for p in task.module.parameters():
            p.add_(1.0)
    state["moments"].add_(1.0)
    saver.close()
    written = load_file(str(tmp_path / "last" / "weights.safetensors"))
    assert written.keys() == before.keys() and all(torch.equal(written[k], before[k]) for k in before)
    saved_state = torch.load(tmp_path / "last" / STATE_FILE, weights_only=False)
    assert saved_state["step"] == 3 and torch.equal(saved_state["moments"], torch.ones(4))
    assert (tmp_path / "last" / "config.yaml").read_text() == "a: 1\n"
    assert not (tmp_path / "last.staging").exists()


@pytest.mark.parametrize("cache", ["true", "false"])
def test_augmentation_in_workers_equals_in_process(tmp_path, cache) -> None:
    data = make_dataset(tmp_path / "data")
    common = [
        f"data.root={data}",
        "train.epochs=1",
        "data.crop_scale=[0.8,1.0]",
        "data.randaugment={n: 2, magnitude: 9, prob: 1.0}",
        f"data.cache_images={cache}",
    ]

    def losses(workers: int) -> list[float]:
        run = tmp_path / f"w{workers}"
        train(load_config(TINY_CONFIG, [*common, f"data.workers={workers}"]), run, show_progress=False)
        rows = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        return [r["loss"] for r in rows if r["type"] == "train"]

    in_process = losses(0)
    assert len(in_process) == 3
    assert losses(2) == in_process
