"""The jobs' shared writers: atomic Parquet commits (whole folder or per table)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.common import write_atomic, write_tables_atomic

pytestmark = pytest.mark.spark


def _ids(spark: SparkSession, *ids: int) -> DataFrame:
    return spark.createDataFrame([(i,) for i in ids], "id long")


def _failing(spark: SparkSession) -> DataFrame:
    """Fails while its rows are being written (not when the plan is built)."""
    return spark.range(3).select(
        F.when(F.col("id") == 2, F.raise_error(F.lit("boom"))).otherwise(F.col("id")).alias("id")
    )


def _read(spark: SparkSession, path: Path) -> DataFrame:
    return spark.read.parquet(str(path))


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


@pytest.fixture
def gold(spark: SparkSession, tmp_path: Path) -> Path:
    """``gold/<day>`` holding the old tables ``a`` (ids 1, 2) and ``stale`` (id 9)."""
    target = tmp_path / "gold" / "2024-03-02"
    write_tables_atomic({"a": _ids(spark, 1, 2), "stale": _ids(spark, 9)}, target)
    return target


def test_replacing_the_folder_drops_tables_not_rewritten(spark, gold):
    write_tables_atomic({"a": _ids(spark, 3), "b": _ids(spark, 4, 5)}, gold, rows={"a": 1, "b": 2})
    assert sorted(p.name for p in gold.iterdir()) == ["a", "b"]
    assertDataFrameEqual(_read(spark, gold / "a"), [(3,)])
    assertDataFrameEqual(_read(spark, gold / "b"), [(4,), (5,)])
    assert not _leftovers(gold.parent)


def test_replacing_each_table_keeps_the_rest_of_the_folder(spark, gold):
    write_tables_atomic({"a": _ids(spark, 3), "b": _ids(spark, 4)}, gold, replace_folder=False)
    assert sorted(p.name for p in gold.iterdir()) == ["a", "b", "stale"]
    assertDataFrameEqual(_read(spark, gold / "a"), [(3,)])
    assertDataFrameEqual(_read(spark, gold / "stale"), [(9,)])
    assert not _leftovers(gold.parent)


@pytest.mark.parametrize("replace_folder", [True, False])
def test_a_failed_write_leaves_the_old_tables_and_no_staging_folder(spark, gold, replace_folder):
    with pytest.raises(Exception, match="boom"):
        write_tables_atomic(
            {"a": _ids(spark, 3), "b": _failing(spark)},  # a is written to staging before b fails
            gold,
            replace_folder=replace_folder,
        )
    assert sorted(p.name for p in gold.iterdir()) == ["a", "stale"]
    assertDataFrameEqual(_read(spark, gold / "a"), [(1,), (2,)])
    assert not _leftovers(gold.parent)


def test_a_failed_single_table_write_leaves_the_old_partition(spark, tmp_path):
    target = tmp_path / "silver" / "events" / "dt=2024-03-02"
    write_atomic(_ids(spark, 1), target, rows=1, json_files={"_SOURCE.json": {"files": ["a.jsonl"]}})
    assert json.loads((target / "_SOURCE.json").read_text()) == {"files": ["a.jsonl"]}
    with pytest.raises(Exception, match="boom"):
        write_atomic(_failing(spark), target)
    assertDataFrameEqual(_read(spark, target), [(1,)])
    assert not _leftovers(tmp_path)
