"""The serving files next to an exported model: one writer, one reader, clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.artifacts import (
    FALLBACK_FILE,
    HISTORY_FILE,
    ITEMS_FILE,
    ItemRecord,
    RankedItem,
    histories_csr,
    read_serving_files,
    write_serving_files,
)


def test_round_trip(tmp_path: Path) -> None:
    fallback = {"by": "weight", "overall": [{"item_id": "a", "score": 2.0}], "by_category": {"x": []}}
    items = [
        {"item_id": "a", "category": "x", "brand": "b", "price": np.float64(3.5), "available": np.bool_(False)},
        {"item_id": "b", "category": None, "price": float("nan")},
    ]
    written = write_serving_files(
        tmp_path, fallback=fallback, histories=[np.array([1, 0]), np.array([], dtype=np.int64)], items=items
    )
    assert written == [FALLBACK_FILE, HISTORY_FILE, ITEMS_FILE]
    files = read_serving_files(tmp_path)
    assert files.fallback is not None and files.fallback.overall == [RankedItem("a", 2.0)]
    assert files.fallback.by_category == {"x": []}
    assert files.histories is not None
    indptr, indices = files.histories
    assert indptr.tolist() == [0, 2, 2] and indices.tolist() == [1, 0]
    assert files.items == [ItemRecord("a", "x", "b", 3.5, False), ItemRecord("b", None, None, None, True)]
    assert json.loads((tmp_path / ITEMS_FILE).read_text())[1] == {
        "item_id": "b",
        "category": None,
        "brand": None,
        "price": None,
        "available": True,
    }


def test_absent_files_read_as_none(tmp_path: Path) -> None:
    files = read_serving_files(tmp_path)
    assert files.fallback is None and files.histories is None and files.items is None


def test_fallback_accepts_pairs_and_categories(tmp_path: Path) -> None:
    (tmp_path / FALLBACK_FILE).write_text(
        json.dumps({"overall": [["a", 2.0], ["b", 1.0]], "by_category": {"shoes": [{"item_id": "c", "score": 3}]}})
    )
    fb = read_serving_files(tmp_path).fallback
    assert fb is not None
    assert [it.item_id for it in fb.overall] == ["a", "b"]
    assert fb.by_category["shoes"] == [RankedItem("c", 3.0)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"popular": []}, "overall"),
        ({"overall": [["a", 1.0], "b"]}, r"overall\[1\]"),
        ("not json", "not valid JSON"),
    ],
)
def test_bad_fallback_names_the_file_and_the_entry(tmp_path: Path, content: object, message: str) -> None:
    raw = content if isinstance(content, str) else json.dumps(content)
    (tmp_path / FALLBACK_FILE).write_text(raw)
    with pytest.raises(ValueError, match=message) as err:
        read_serving_files(tmp_path)
    assert FALLBACK_FILE in str(err.value)


def test_writer_refuses_what_the_reader_would_refuse(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="overall"):
        write_serving_files(tmp_path, fallback={"top": []})
    assert not (tmp_path / FALLBACK_FILE).exists()


def test_items_as_object_and_bad_rows(tmp_path: Path) -> None:
    (tmp_path / ITEMS_FILE).write_text(json.dumps({"a": {"price": 2, "available": True}}))
    assert read_serving_files(tmp_path).items == [ItemRecord("a", price=2.0)]
    (tmp_path / ITEMS_FILE).write_text(json.dumps([{"category": "x"}]))
    with pytest.raises(ValueError, match="entry 0"):
        read_serving_files(tmp_path)


def test_history_csr_shapes() -> None:
    indptr, indices = histories_csr([])
    assert indptr.tolist() == [0] and indices.size == 0
    indptr, indices = histories_csr([np.array([3]), np.array([4, 5])])
    assert indptr.dtype == np.int64 and indices.dtype == np.int32 and indices.tolist() == [3, 4, 5]
