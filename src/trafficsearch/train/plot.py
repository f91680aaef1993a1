"""curves.png from metrics.jsonl: train loss per logged step and val mAP@10 per epoch."""

from __future__ import annotations

import io
import json
from pathlib import Path

from trafficsearch.ioutil import atomic_write_bytes


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(metrics_path: str | Path, out_path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [r for r in rows if r.get("type") == "train"]
    val = [r for r in rows if r.get("type") == "val"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    ax1.set(title="train loss", xlabel="step", ylabel="contrastive loss")
    for key, label in (("map_equal", "mAP@10 equal"), ("map_contain", "mAP@10 contain")):
        ax2.plot([r["epoch"] for r in val], [100 * r[key] for r in val], marker="o", label=label)
    ax2.set(title="validation (official mAP@10)", xlabel="epoch", ylabel="mAP x100")
    if val:
        ax2.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(out_path, buf.getvalue())
