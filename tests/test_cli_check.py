"""`trafficsearch check` end to end: summary on good data, one line and exit 2 on bad data, skip mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

CAR = "kcbluaihml.jpg$white Audi.$This is a white Audi."
PED = "000055.jpg$1,0,1,0,0,0,1,0,0,0,1,0,0,1,0,0,0,0,0,0,0$A female pedestrian who is a minor."


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trafficsearch.cli", *args], capture_output=True, text=True, timeout=120
    )


def make_dataset(tmp_path: Path, lines: list[str]) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), (200, 200, 200)).save(images / "kcbluaihml.jpg")
    Image.new("RGB", (20, 50), (10, 20, 30)).save(images / "000055.jpg")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(lines) + "\n")
    return labels, images


def test_check_summarises_good_data(tmp_path: Path) -> None:
    labels, images = make_dataset(tmp_path, [CAR, PED])
    result = run_cli("check", str(labels), "--images", str(images))
    assert result.returncode == 0, result.stderr
    assert "all 2 lines parsed and all 2 images decoded" in result.stdout
    assert "Female" in result.stdout and "Audi 1" in result.stdout


def test_check_bad_line_is_one_line_error(tmp_path: Path) -> None:
    labels, images = make_dataset(tmp_path, [CAR, PED.replace("1,0,1,0", "1,0,1")])
    result = run_cli("check", str(labels), "--images", str(images))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{labels}:2" in lines[0] and "attributes" in lines[0]


def test_check_missing_and_corrupt_images(tmp_path: Path) -> None:
    labels, images = make_dataset(tmp_path, [CAR, PED, "zzz.jpg$SUV.$A SUV."])
    (images / "000055.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    result = run_cli("check", str(labels), "--images", str(images))
    assert result.returncode == 2 and f"{labels}:2" in result.stderr and "unreadable" in result.stderr
    skipped = run_cli("check", str(labels), "--images", str(images), "--on-error", "skip")
    assert skipped.returncode == 0, skipped.stderr
    assert "2 missing or unreadable image(s)" in skipped.stdout
    assert f"{labels}:3" in skipped.stdout and "image not found" in skipped.stdout


def test_check_skip_mode_reports_bad_lines(tmp_path: Path) -> None:
    labels, _ = make_dataset(tmp_path, [CAR, "broken", PED])
    result = run_cli("check", str(labels), "--on-error", "skip")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 bad label line(s)" in result.stdout and f"{labels}:2" in result.stdout
