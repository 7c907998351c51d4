"""The jobs' shared readers, writers and CLI: one read of many days, atomic Parquet commits (whole folder, per table
or per partition), job options."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from jobs.common import read_days, run_job_main, write_atomic, write_partitions_atomic, write_tables_atomic

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


def test_run_job_main_passes_a_jobs_own_options_as_keywords(spark, tmp_path, capsys):
    calls: list[tuple[Any, ...]] = []

    def run(lake_root, run_date, cfg, session, window_days, **options):
        calls.append((lake_root, run_date, session, window_days, options))
        return {"stage": "fake", "run_date": run_date.isoformat()}

    def add_arguments(parser):
        parser.add_argument("--force", action="store_true")
        parser.add_argument("--max-files", type=int, default=7)

    argv = ["--lake", str(tmp_path), "--run-date", "2024-03-02", "--force"]
    assert run_job_main(run, "fake job", "fake", 3, argv, add_arguments=add_arguments) == 0
    assert calls == [(str(tmp_path), dt.date(2024, 3, 2), spark, 3, {"force": True, "max_files": 7})]
    assert json.loads(capsys.readouterr().out) == {"stage": "fake", "run_date": "2024-03-02"}

    run_job_main(run, "fake job", "fake", None, ["--lake", str(tmp_path), "--run-date", "2024-03-02"])
    assert calls[-1][3:] == (None, {})


def test_partitioned_write_commits_each_target_with_its_json(spark, tmp_path):
    base = tmp_path / "silver" / "events"
    old = base / "dt=2024-03-01"
    write_atomic(_ids(spark, 9), old, rows=1)
    rows = spark.createDataFrame(
        [(1, "2024-03-01"), (2, "2024-03-01"), (3, "2024-03-02"), (4, "2024-03-09")], "id long, day string"
    )
    targets = {day: base / f"dt={day}" for day in ("2024-03-01", "2024-03-02", "2024-03-03")}

    write_partitions_atomic(rows, "day", targets, json_files={"2024-03-02": {"_M.json": {"n": 1}}})

    assertDataFrameEqual(_read(spark, targets["2024-03-01"]), [(1,), (2,)])
    assertDataFrameEqual(_read(spark, targets["2024-03-02"]), [(3,)])
    empty = _read(spark, targets["2024-03-03"])  # no rows: an empty partition that keeps the schema
    assert empty.count() == 0 and empty.columns == ["id"]
    assert json.loads((targets["2024-03-02"] / "_M.json").read_text()) == {"n": 1}
    assert sorted(p.name for p in base.iterdir()) == sorted(p.name for p in targets.values())  # 2024-03-09: no target
    assert not _leftovers(tmp_path)


def test_a_failed_partitioned_write_leaves_every_target(spark, tmp_path):
    target = tmp_path / "events" / "dt=2024-03-01"
    write_atomic(_ids(spark, 1), target, rows=1)
    failing = _failing(spark).withColumn("day", F.lit("2024-03-01"))
    with pytest.raises(Exception, match="boom"):
        write_partitions_atomic(failing, "day", {"2024-03-01": target})
    assertDataFrameEqual(_read(spark, target), [(1,)])
    assert not _leftovers(tmp_path)


def test_read_days_reads_the_days_at_once_with_their_date(spark, tmp_path):
    base = tmp_path / "bronze" / "events"
    for n, day in enumerate((dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3))):
        write_atomic(_ids(spark, n), base / f"dt={day.isoformat()}", rows=1)
    schema = T.StructType([T.StructField("id", T.LongType())])

    out = read_days(spark, base, [dt.date(2024, 3, 3), dt.date(2024, 3, 1)], schema)

    assert out.schema == T.StructType([*schema.fields, T.StructField("dt", T.DateType())])
    assertDataFrameEqual(out, [(0, dt.date(2024, 3, 1)), (2, dt.date(2024, 3, 3))])
    assert read_days(spark, base, [], schema).count() == 0
    assert schema.fieldNames() == ["id"]  # the caller's schema is left as it was
