"""One way to get a SparkSession for jobs, expectations and tests.

The master and driver memory come from ``core.settings`` (``RECSYS_SPARK_MASTER``,
``RECSYS_SPARK_DRIVER_MEMORY``); the session clock is UTC so timestamps never shift with the
machine's zone, and Parquet timestamps are written as INT64 microseconds so pandas/pyarrow read
them without the legacy INT96 path.
"""

from __future__ import annotations

import os

from pyspark.sql import SparkSession

from core.settings import get_settings

#: On ``local[...]`` masters the default 200 shuffle partitions mostly cost task overhead; a few per core suffice.
LOCAL_SHUFFLE_PARTITIONS_PER_CORE = 2


def builder_master_is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[")


def get_spark(
    app_name: str = "mercato", master: str | None = None, shuffle_partitions: int | None = None
) -> SparkSession:
    """Return the active SparkSession, or start one configured for the pipeline.

    ``shuffle_partitions`` (default: two per core on a local master, Spark's own on a cluster) is
    applied to an already active session too, since it is a runtime setting.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        if shuffle_partitions is not None:
            active.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions))
        return active

    settings = get_settings()
    builder = (
        SparkSession.builder.appName(app_name)
        .master(master or settings.spark_master)
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    )
    if shuffle_partitions is None and builder_master_is_local(master or settings.spark_master):
        shuffle_partitions = LOCAL_SHUFFLE_PARTITIONS_PER_CORE * (os.cpu_count() or 1)
    if shuffle_partitions is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
