"""A self-contained HTML report: the summary metrics, then sampled queries with their top-k thumbnails
marked right (green) or wrong (red). Thumbnails are embedded as small base64 JPEGs so the one file can be
mailed or moved without the images folder; numbers alone hide *how* a model fails, the pictures show it.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from trafficsearch.data.records import KINDS, Record
from trafficsearch.eval.metrics import EvalResult, Rule, judge, recall_ks, score
from trafficsearch.ioutil import atomic_write_text

THUMB_SIZE = 112
THUMB_QUALITY = 75

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 22px; margin-bottom: 4px; } .sub { color: #666; margin-top: 0; }
table.metrics { border-collapse: collapse; margin: 12px 0 24px; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
table.metrics th:first-child, table.metrics td:first-child { text-align: left; }
table.metrics thead { background: #eee; }
section.query { background: #fff; border: 1px solid #ddd; border-radius: 6px;
  padding: 10px 12px; margin: 12px 0; }
section.query h3 { margin: 0 0 4px; font-size: 14px; color: #555; font-weight: normal; }
section.query p.text { margin: 0 0 8px; font-size: 15px; }
.row { display: flex; flex-wrap: wrap; gap: 8px; }
figure.hit { margin: 0; width: 120px; text-align: center; font-size: 11px; }
figure.hit img, figure.hit div.missing { width: 112px; height: 112px; object-fit: contain; background: #eee;
  border: 4px solid; border-radius: 4px; }
figure.right img, figure.right div.missing { border-color: #1a9e3a; }
figure.wrong img, figure.wrong div.missing { border-color: #d1242f; }
div.missing { display: flex; align-items: center; justify-content: center; color: #888; }
figcaption { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.mark-right { color: #1a9e3a; font-weight: bold; } .mark-wrong { color: #d1242f; font-weight: bold; }
"""


def thumbnail_data_uri(path: Path, size: int = THUMB_SIZE, quality: int = THUMB_QUALITY) -> str | None:
    """The image shrunk to fit size x size as a base64 JPEG data URI; None if it is missing or unreadable."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=quality)
    except (OSError, UnidentifiedImageError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def sample_queries(queries: Sequence[Record], n_queries: int, seed: int = 0) -> list[int]:
    """Indices of up to n_queries queries, split evenly over the kinds present, sorted, reproducible."""
    rng = np.random.default_rng(seed)
    pools = {kind: [i for i, q in enumerate(queries) if q.kind == kind] for kind in KINDS}
    pools = {kind: pool for kind, pool in pools.items() if pool}
    chosen: list[int] = []
    remaining = n_queries
    # Smallest pool first, so a kind with few queries hands its unused share to the others.
    for left, (_, pool) in enumerate(sorted(pools.items(), key=lambda item: len(item[1]))):
        share = min(len(pool), remaining // (len(pools) - left))
        chosen += [pool[j] for j in rng.choice(len(pool), size=share, replace=False)]
        remaining -= share
    return sorted(chosen)


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def metrics_table(result: EvalResult) -> str:
    """The summary table: overall and per kind, official mAP, mAP over min(R, k), Recall@k."""
    ks = recall_ks(result.k)
    head = ["", "queries", f"mAP@{result.k} (official)", f"mAP@{result.k} / min(R,{result.k})"]
    head += [f"R@{m}" for m in ks]
    rows = [("overall", result.overall)] + list(result.per_kind.items())
    body = []
    for name, s in rows:
        cells = [name, str(s.n_queries), _fmt(s.map_official), _fmt(s.map_at_k)] + [
            _fmt(s.recall[m]) for m in ks
        ]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    return f'<table class="metrics"><thead>{header}</thead><tbody>{"".join(body)}</tbody></table>'


def write_html_report(
    out_html: str | Path,
    queries: Sequence[Record],
    gallery: Sequence[Record],
    ranked_names: Sequence[Sequence[str]],
    images_dir: str | Path,
    rule: Rule = "equal",
    n_queries: int = 30,
    seed: int = 0,
    scores: Sequence[Sequence[float]] | None = None,
    k: int = 10,
    title: str = "trafficsearch evaluation",
) -> EvalResult:
    """Write the report atomically and return the metrics it shows. `scores[i][j]` is shown under the
    j-th thumbnail of query i when given. Images missing from `images_dir` show as grey boxes."""
    images_dir = Path(images_dir)
    judgement = judge(queries, gallery, ranked_names, rule)
    result = score(judgement, rule, k)
    by_name = {record.image: record for record in gallery}
    cache: dict[str, str | None] = {}
    sections = []
    for i in sample_queries(queries, n_queries, seed):
        query = queries[i]
        figures = []
        for j, name in enumerate(list(ranked_names[i])[:k]):
            if name not in cache:
                cache[name] = thumbnail_data_uri(images_dir / name)
            right = bool(judgement.hits[i, j])
            mark = "right" if right else "wrong"
            tip = name + (f" - {by_name[name].attributes}" if name in by_name else " - not in the gallery")
            uri = cache[name]
            picture = (
                f'<img src="{uri}" alt="{html.escape(name)}">'
                if uri
                else '<div class="missing">missing</div>'
            )
            score_text = f" {scores[i][j]:.3f}" if scores is not None and j < len(scores[i]) else ""
            figures.append(
                f'<figure class="hit {mark}" data-rank="{j + 1}" title="{html.escape(tip)}">{picture}'
                f'<figcaption><span class="mark-{mark}">{"&#10003;" if right else "&#10007;"}</span> '
                f'#{j + 1}<span class="score">{score_text}</span></figcaption>'
                f"<figcaption>{html.escape(name)}</figcaption></figure>"
            )
        where = f"line {query.line}" if query.line else f"query {i}"
        sections.append(
            f'<section class="query" data-index="{i}" data-kind="{query.kind}">'
            f"<h3>{where} &middot; {query.kind} &middot; AP {result.ap[i]:.3f} &middot; "
            f"R = {int(judgement.n_relevant[i])} &middot; "
            f"annotation <code>{html.escape(query.attributes)}</code></h3>"
            f'<p class="text">{html.escape(query.text)}</p>'
            f'<div class="row">{"".join(figures)}</div></section>'
        )
    missing = sum(uri is None for uri in cache.values())
    note = f" &middot; {missing} image(s) missing from {html.escape(str(images_dir))}" if missing else ""
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="sub">relevance rule <b>{html.escape(rule)}</b> &middot; {len(queries)} queries &middot; '
        f"gallery of {len(gallery)} images &middot; {len(sections)} sampled queries below "
        f"(seed {seed}){note}</p>"
        f"{metrics_table(result)}{''.join(sections)}</body></html>\n"
    )
    atomic_write_text(out_html, page)
    return result
