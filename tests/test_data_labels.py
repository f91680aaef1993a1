"""The label parser: the real validation file parses, and every bad-input class gets one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from trafficsearch.data.labels import parse_line, read_labels, read_queries, write_labels
from trafficsearch.data.records import Record, is_relevant, parse_vehicle_attribute
from trafficsearch.errors import DataError
from trafficsearch.resources import extract_val_labels

PED = "000055.jpg$1,0,1,0,0,0,1,0,0,0,1,0,0,1,0,0,0,0,0,0,0$A female pedestrian who is a minor."
CAR = "kcbluaihml.jpg$white Audi.$This is a white Audi."


def write(tmp_path: Path, data: bytes | str, name: str = "labels.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def test_real_val_labels_parse(val_labels_path: Path) -> None:
    labels = read_labels(val_labels_path)
    kinds = [r.kind for r in labels.records]
    assert len(labels.records) == 10_000
    assert kinds.count("vehicle") == 3413 and kinds.count("pedestrian") == 6587
    assert labels.skipped == []
    # vehicles come first, then pedestrians, as competition.md says
    assert kinds == ["vehicle"] * 3413 + ["pedestrian"] * 6587
    balong = [r for r in labels.records if r.attributes == "Balong Heavy Truck."]
    assert balong and all(r.vehicle.brand == "Balong Heavy Truck" and r.vehicle.type is None for r in balong)


def test_packaged_val_labels_equal_shared(val_labels_path: Path, tmp_path: Path) -> None:
    out = extract_val_labels(tmp_path / "val.txt")
    assert out.read_bytes() == val_labels_path.read_bytes()


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("white Audi.", ("white", "Audi", None)),
        ("SUV.", (None, None, "SUV")),
        ("Balong Heavy Truck.", (None, "Balong Heavy Truck", None)),
        ("Hongyan.", (None, "Hongyan", None)),
        ("grey Chery Sedan.", ("grey", "Chery", "Sedan")),
        ("orange Golden Dragon Bus.", ("orange", "Golden Dragon", "Bus")),
        ("grey Balong Heavy Truck Truck.", ("grey", "Balong Heavy Truck", "Truck")),
    ],
)
def test_vehicle_attribute_parsing(field: str, expected: tuple) -> None:
    parsed = parse_vehicle_attribute(field)
    assert parsed is not None
    assert (parsed.color, parsed.brand, parsed.type) == expected
    assert parsed.label() == field


@pytest.mark.parametrize("field", ["white Audi", "Audi Audi.", "magenta Audi.", ".", "white."])
def test_vehicle_attribute_rejects(field: str) -> None:
    assert parse_vehicle_attribute(field) is None


@pytest.mark.parametrize(
    ("content", "line", "needle", "field"),
    [
        (f"{CAR}\nabc.jpg$white Audi.\n", 2, "expected 3", None),
        (f"{CAR}\na.jpg$white Audi.$x$y\n", 2, "found 4", None),
        (f"{CAR}\n{PED.replace('1,0,1,0', '1,0,1')}\n", 2, "20 values, expected 21", "attributes"),
        (f"{PED.replace('1,0,1,0', '1,0,2,0')}\n", 1, "not binary", "attributes"),
        (f"{PED.replace('1,0,1,0', '1,1,1,0')}\n", 1, "age group", "attributes"),
        ("x.jpg$1,0,1,0,0,0,0,0,0,0,1,0,0,1,0,0,0,0,0,0,0$t\n", 1, "orientation group", "attributes"),
        ("x.jpg$1,0,1,0,0,0,1,0,0,0,1,0,0,1,1,0,0,0,0,0,0$t\n", 1, "sleeve group", "attributes"),
        ("x.jpg$1,0,1,0,0,0,1,0,0,0,1,0,0,1,0,1,1,0,0,0,0$t\n", 1, "upper pattern group", "attributes"),
        (f"{CAR}\nb.jpg$white Audi.$   \n", 2, "text is empty", "text"),
        (f"{CAR}\n$white Audi.$A white Audi.\n", 2, "image name is empty", "image"),
        (f"{CAR}\nb.jpg$purple Unicorn.$A purple Unicorn.\n", 2, "neither", "attributes"),
        (f"{CAR}\n{CAR}\n", 2, "already labelled on line 1", "image"),
        (f"{CAR}\n\n{PED}\n", 2, "blank line", None),
    ],
)
def test_bad_lines_name_file_line_and_field(
    tmp_path: Path, content: str, line: int, needle: str, field: str | None
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(DataError) as info:
        read_labels(path)
    error = info.value
    assert error.line == line and error.field == field
    message = error.one_line()
    assert message.startswith(f"{path}:{line}") and needle in message


def test_bom_crlf_and_non_utf8(tmp_path: Path) -> None:
    bom = write(tmp_path, b"\xef\xbb\xbf" + CAR.encode() + b"\n", "bom.txt")
    with pytest.raises(DataError, match="byte-order mark") as info:
        read_labels(bom)
    assert info.value.line == 1
    crlf = write(tmp_path, (CAR + "\n" + PED + "\r\n").encode(), "crlf.txt")
    with pytest.raises(DataError, match="CRLF") as info:
        read_labels(crlf)
    assert info.value.line == 2
    latin = write(tmp_path, CAR.encode() + b"\nq.jpg$white Audi.$Caf\xe9\n", "latin.txt")
    with pytest.raises(DataError, match="not UTF-8 at column 22") as info:
        read_labels(latin)
    assert info.value.line == 2


def test_skip_mode_keeps_good_lines_and_reports_bad(tmp_path: Path) -> None:
    content = f"{CAR}\nbad line\n{PED}\nz.jpg$1,0$x\n"
    labels = read_labels(write(tmp_path, content), on_error="skip")
    assert [r.image for r in labels.records] == ["kcbluaihml.jpg", "000055.jpg"]
    assert [e.line for e in labels.skipped] == [2, 4]


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_labels(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="empty"):
        read_labels(write(tmp_path, b""))


def test_round_trip_and_queries(val_labels_path: Path, tmp_path: Path) -> None:
    labels = read_labels(val_labels_path)
    out = tmp_path / "copy.txt"
    write_labels(labels.records, out)
    assert out.read_bytes() == val_labels_path.read_bytes()
    queries = write(
        tmp_path, "This is a grey Chery Sedan.\nThis is a grey Chery Sedan.\nA red BYD.\n", "q.txt"
    )
    assert read_queries(queries) == [
        "This is a grey Chery Sedan.",
        "This is a grey Chery Sedan.",
        "A red BYD.",
    ]
    with pytest.raises(DataError, match="empty query") as info:
        read_queries(write(tmp_path, "A red BYD.\n\nA blue BYD.\n", "q2.txt"))
    assert info.value.line == 2


def test_relevance_rules() -> None:
    def ped(vector: str) -> Record:
        return parse_line(f"p.jpg${vector}$t", path=Path("mem"), line=1)

    query = ped("1,0,1,0,1,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0")
    superset = ped("1,0,1,0,1,0,0,1,0,0,0,0,0,1,0,0,0,0,0,0,0")  # also has a hat
    other_gender = ped("0,0,1,0,1,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0")
    car = parse_line(CAR, path=Path("mem"), line=1)
    assert is_relevant(query, query, "equal") and is_relevant(query, query, "contain")
    assert not is_relevant(query, superset, "equal") and is_relevant(query, superset, "contain")
    assert not is_relevant(superset, query, "contain")  # the query's hat is missing from the image
    assert not is_relevant(query, other_gender, "contain")
    assert not is_relevant(car, query, "contain") and not is_relevant(query, car, "equal")
    assert is_relevant(car, parse_line("z.jpg$white Audi.$A white Audi.", path=Path("m"), line=1), "contain")
