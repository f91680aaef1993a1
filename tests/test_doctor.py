"""`trafficsearch doctor`: on an empty cache it names every file the seed configs need (and the commands
that fetch them), exit 1; on a cache holding those files (written here) it says ready, exit 0. Model load
errors for missing files are one line naming the file and pointing to doctor."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from trafficsearch.cli import main
from trafficsearch.cli.doctor_commands import DEFAULT_CONFIGS, needs_of
from trafficsearch.errors import ConfigError

SEED_HUB_FILES = {  # the real repos of the seed's models (open_clip's registry, the BLIP config)
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": ["open_clip_pytorch_model.bin"],
    "laion/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k": ["open_clip_pytorch_model.bin"],
    "xlm-roberta-large": ["config.json", "tokenizer.json"],
    "Salesforce/blip-itm-large-coco": ["config.json", "model.safetensors"],
}
CHECKPOINTS = ("vit-h-14-a", "vit-h-14-b", "xlmr-vit-h-14", "blip-large")


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    monkeypatch.setattr(sys, "argv", ["trafficsearch", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every cache env var pointed at empty folders under tmp_path; the cwd too (relative checkpoints)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _put_in_hub_cache(hub: Path, repo: str, filename: str) -> None:
    """huggingface_hub's cache layout: models--org--name/{refs/main, snapshots/<commit>/<file>}."""
    folder = hub / ("models--" + repo.replace("/", "--"))
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    target = folder / "snapshots" / commit / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"x")


def test_empty_cache_names_every_missing_file(
    caches: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, "doctor") == 1
    out = capsys.readouterr().out
    hub = caches / "hf" / "hub"
    assert f"Hugging Face hub cache: {hub}" in out
    for repo, files in SEED_HUB_FILES.items():  # one fetch command per repo, naming its files
        assert f"hf download {repo} {' '.join(files)} --cache-dir {hub}" in out
    missing = [n for c in DEFAULT_CONFIGS for n in needs_of(c)[1] if not n.present]
    assert {n.location for n in missing if n.hf is None} == {f"checkpoints/{c}" for c in CHECKPOINTS}
    assert len({n.hf for n in missing if n.hf}) == sum(len(f) for f in SEED_HUB_FILES.values())
    assert f"{len({n.location for n in missing})} file(s) missing" in out
    assert max(len(line) for line in out.splitlines() if "│" in line or "┃" in line) <= 100


def test_populated_cache_is_ready(
    caches: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = caches / "hf" / "hub"
    for repo, files in SEED_HUB_FILES.items():
        for filename in files:
            _put_in_hub_cache(hub, repo, filename)
    for name in CHECKPOINTS:
        (caches / "checkpoints" / name).mkdir(parents=True)
        (caches / "checkpoints" / name / "weights.safetensors").write_bytes(b"x")
        info = {"family": "blip"} if name == "blip-large" else {"family": "open_clip", "model_cfg": {}}
        if name == "xlmr-vit-h-14":  # its model.json names the HF text tower: config + tokenizer needed
            info["model_cfg"] = {
                "text_cfg": {"hf_model_name": "xlm-roberta-large"}
                | {"hf_tokenizer_name": "xlm-roberta-large"}
            }
        (caches / "checkpoints" / name / "model.json").write_text(yaml.safe_dump(info))
    assert run_cli(monkeypatch, "doctor") == 0
    out = capsys.readouterr().out
    assert "ready" in out and "missing" not in out and "hf download" not in out
    # one file taken away: doctor names it again and exits 1
    (caches / "checkpoints" / "blip-large" / "weights.safetensors").unlink()
    assert run_cli(monkeypatch, "doctor", "ensembles/seed") == 1
    assert "1 file(s) missing" in capsys.readouterr().out


def test_ensemble_members_resolve_next_to_the_ensemble_file(caches: Path) -> None:
    (caches / "proj" / "ck").mkdir(parents=True)
    for f in ("model.json", "weights.safetensors"):
        (caches / "proj" / "ck" / f).write_text("{}")
    ensemble = {"name": "e", "members": [{"name": "a", "model": "ck", "weight": 1.0}]}
    (caches / "proj" / "e.yaml").write_text(yaml.safe_dump(ensemble))
    _, needs = needs_of(caches / "proj" / "e.yaml")
    assert [n.present for n in needs] == [True]


def test_missing_xlmr_tokenizer_is_one_line_pointing_to_doctor(caches: Path) -> None:
    from trafficsearch.models.clip import build_from_config

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 16, "layers": 1, "head_width": 8},
        "text_cfg": {"hf_model_name": "xlm-roberta-large", "hf_tokenizer_name": "xlm-roberta-large"},
    }
    with pytest.raises(ConfigError) as info:
        build_from_config("ts-test-xlmr", cfg, load_text_pretrained=False)
    line = info.value.one_line()
    assert "\n" not in line and "xlm-roberta-large" in line and "trafficsearch doctor" in line


def test_missing_tag_weights_name_the_repo(caches: Path) -> None:
    from trafficsearch.models.clip import create_clip

    with pytest.raises(ConfigError) as info:
        create_clip("ViT-B-32", "laion2b_s34b_b79k")
    line = info.value.one_line()
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in line and "trafficsearch doctor" in line
