"""The competition submission JSON (`{"results": [{"text", "image_names"}]}`) and the `infer.txt` layout
(a label line followed by predicted names), read strictly: the official scorer gives no score at all when
the query texts drift from the query file, so a mismatch is an error here too, naming the line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trafficsearch.data.labels import parse_line
from trafficsearch.data.records import Record
from trafficsearch.errors import DataError
from trafficsearch.ioutil import atomic_write_json

Format = Literal["json", "infer"]


@dataclass
class Submission:
    """Query texts and their ranked image names, in query-file order."""

    path: Path | None
    texts: list[str]
    ranked_names: list[list[str]]


@dataclass
class InferFile:
    """An `infer.txt`-style file: the label records and, per line, the predicted names (fields 4..)."""

    path: Path
    records: list[Record]
    ranked_names: list[list[str]]


def write_submission(path: str | Path, texts: Sequence[str], ranked_names: Sequence[Sequence[str]]) -> None:
    """Write the competition JSON atomically; one result per query, in query order."""
    if len(texts) != len(ranked_names):
        raise DataError(f"{len(ranked_names)} ranked lists for {len(texts)} queries", path=path)
    results = [
        {"text": text, "image_names": [str(name) for name in names]}
        for text, names in zip(texts, ranked_names, strict=True)
    ]
    atomic_write_json(path, {"results": results}, indent=None)


def _short(text: str, limit: int = 90) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def check_texts(
    path: str | Path,
    got: Sequence[str],
    expected: Sequence[str],
    source: str = "query file",
    by_line: bool = False,
) -> None:
    """Raise unless `got` equals `expected` line for line; the error names the line and both texts.

    `by_line` reports positions as lines of `path` (infer.txt) instead of JSON result indices.
    """
    unit = "lines" if by_line else "results"
    if len(got) != len(expected):
        raise DataError(f"has {len(got)} {unit} but the {source} has {len(expected)} lines", path=path)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        if a == b:
            continue
        if by_line:
            raise DataError(
                f"text {_short(a)} differs from line {i + 1} of the {source}: {_short(b)}",
                path=path,
                line=i + 1,
                field="text",
            )
        raise DataError(
            f"result {i} (query line {i + 1}) has text {_short(a)} but the {source} has {_short(b)}",
            path=path,
            field=f"results[{i}].text",
        )


def read_submission(path: str | Path, queries: Sequence[str] | None = None) -> Submission:
    """Read and validate a submission; with `queries`, its texts must match them line for line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("submission file not found", path=path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"submission is not UTF-8 (byte {exc.start})", path=path) from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"not valid JSON: {exc.msg} at column {exc.colno}", path=path, line=exc.lineno
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise DataError('expected a JSON object {"results": [...]}', path=path, field="results")
    texts: list[str] = []
    ranked: list[list[str]] = []
    for i, item in enumerate(data["results"]):
        where = f"results[{i}]"
        if not isinstance(item, dict):
            raise DataError(
                f"expected an object with 'text' and 'image_names', got {type(item).__name__}",
                path=path,
                field=where,
            )
        text, names = item.get("text"), item.get("image_names")
        if not isinstance(text, str):
            raise DataError("'text' is missing or not a string", path=path, field=f"{where}.text")
        if not isinstance(names, list):
            raise DataError("'image_names' is missing or not a list", path=path, field=f"{where}.image_names")
        for j, name in enumerate(names):
            if not isinstance(name, str):
                raise DataError(
                    f"image name is {type(name).__name__} {name!r}, expected a string",
                    path=path,
                    field=f"{where}.image_names[{j}]",
                )
        texts.append(text)
        ranked.append(names)
    if queries is not None:
        check_texts(path, texts, queries)
    return Submission(path=path, texts=texts, ranked_names=ranked)


def read_infer(path: str | Path) -> InferFile:
    """Read `image$attributes$text$name1$...$nameK` lines: the label part is parsed like a label file."""
    path = Path(path)
    if not path.is_file():
        raise DataError("prediction file not found", path=path)
    try:
        content = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"file is not UTF-8 (byte {exc.start})", path=path) from None
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    records: list[Record] = []
    ranked: list[list[str]] = []
    for number, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        fields = line.split("$")
        if len(fields) < 3:
            raise DataError(
                f"expected image$attributes$text$name1$..., found {len(fields)} field(s)",
                path=path,
                line=number,
            )
        records.append(parse_line("$".join(fields[:3]), path=path, line=number))
        names = fields[3:]
        for j, name in enumerate(names):
            if not name.strip():
                raise DataError(
                    f"predicted name {j + 1} is empty", path=path, line=number, field=f"field {j + 4}"
                )
        ranked.append(names)
    if not records:
        raise DataError("prediction file is empty", path=path)
    return InferFile(path=path, records=records, ranked_names=ranked)


def detect_format(path: str | Path) -> Format:
    """'json' for a submission, 'infer' for an infer.txt-style file: by extension, else by the first byte."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix == ".txt":
        return "infer"
    if not path.is_file():
        raise DataError("submission file not found", path=path)
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    return "json" if head[:1] in (b"{", b"[") else "infer"


def load_ranking(path: str | Path, queries: Sequence[Record]) -> list[list[str]]:
    """Ranked names for `queries` from either format; the texts must match the queries line for line."""
    texts = [record.text for record in queries]
    if detect_format(path) == "json":
        return read_submission(path, texts).ranked_names
    infer = read_infer(path)
    check_texts(path, [r.text for r in infer.records], texts, source="label file", by_line=True)
    return infer.ranked_names
