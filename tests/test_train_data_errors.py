"""data.on_error: a training run over a data set with unreadable images and bad label lines finishes, lists
each left-out item (file, line, reason) in skipped.jsonl and summary.json, and fails with one line when more
than data.max_bad_fraction of a split is bad; on_error: fail stops at the first bad item."""

from __future__ import annotations

import json

import pytest
import torch

from trafficsearch.errors import DataError
from trafficsearch.testing.datasets import TINY_CONFIG, make_dataset
from trafficsearch.train.__main__ import main
from trafficsearch.train.config import load_config
from trafficsearch.train.loop import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """16 train images: 2 corrupt, 1 missing; 2 bad label lines appended (17th, 18th); val: 1 corrupt of 8."""
    root = make_dataset(tmp_path_factory.mktemp("broken") / "data", n_train=16, n_val=8)
    labels = root / "train" / "train_label.txt"
    names = [line.split("$")[0] for line in labels.read_text().splitlines()]
    images = root / "train" / "train_images"
    (images / names[3]).write_bytes(b"not a jpeg at all")
    (images / names[7]).write_bytes((images / names[7]).read_bytes()[:40])  # truncated
    (images / names[11]).unlink()
    with labels.open("a") as handle:
        handle.write("no dollar signs on this line\n")
        handle.write("abc.jpg$red Audi.\n")  # two fields
    val_names = [line.split("$")[0] for line in (root / "val" / "val_label.txt").read_text().splitlines()]
    (root / "val" / "val_images" / val_names[2]).write_bytes(b"\x00" * 10)
    return root, names, val_names


def _args(root, out, *extra):
    return [
        "--config",
        str(TINY_CONFIG),
        f"data.root={root}",
        "train.epochs=1",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


@pytest.mark.parametrize("cache", ["true", "false"])
def test_skips_bad_items_reports_each_and_finishes(tmp_path, broken, cache) -> None:
    root, names, val_names = broken
    out = tmp_path / "run"
    main(_args(root, out, "data.max_bad_fraction=0.3", f"data.cache_images={cache}"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["skipped"] == 6
    rows = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    got = {(r["split"], r["kind"], r["file"].rsplit("/", 1)[-1], r["line"]) for r in rows}
    label_file = "train_label.txt"
    assert got == {
        ("train", "label", label_file, 17),
        ("train", "label", label_file, 18),
        ("train", "image", names[3], 4),
        ("train", "image", names[7], 8),
        ("train", "image", names[11], 12),
        ("val", "image", val_names[2], 3),
    }
    assert all(r["reason"] for r in rows)
    assert any("missing" in r["reason"] for r in rows if r["file"].endswith(names[11]))
    # 13 readable train images make 3 full batches of 4: one epoch is 3 steps
    assert summary["step"] == 3


def test_too_many_bad_items_fail_with_one_line(tmp_path, broken, capsys) -> None:
    root, _, _ = broken
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(_args(root, out, "data.max_bad_fraction=0.1"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "5 of 18 train items" in err and "data.max_bad_fraction 10%" in err and "skipped.jsonl" in err
    assert len((out / "skipped.jsonl").read_text().splitlines()) == 6  # the list is there to fix the data
    assert not (out / "last").exists()


def test_on_error_fail_stops_at_the_first_bad_item(tmp_path, broken) -> None:
    root, _, _ = broken
    cfg = load_config(TINY_CONFIG, [f"data.root={root}", "train.epochs=1", "data.on_error=fail"])
    with pytest.raises(DataError) as err:
        train(cfg, tmp_path / "run", show_progress=False)
    assert err.value.path.endswith("train_label.txt") and err.value.line == 17
