"""Where things live: typed settings read from ``RECSYS_*`` environment variables.

Every location defaults to a folder under ``.recsys/`` in the working directory so that a fresh
clone runs with nothing configured; production points the same settings at S3, a tracking server
and a Spark master.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECSYS_", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    home: Path = Field(default=Path(".recsys"), description="Root of all local state.")
    lake_uri: str = Field(default="", description="Data lake root (local path). Default <home>/lake.")
    registry_uri: str = Field(
        default="", description="Serving registry: a path or s3://bucket/prefix. Default <home>/registry."
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (MinIO, SeaweedFS).")
    s3_region: str = "us-east-1"
    registry_signing_key: str = Field(
        default="",
        description="Secret (kept outside the bucket) that signs and verifies registry manifests and champion.json "
        "(HMAC-SHA256); empty = unsigned.",
    )
    mlflow_tracking_uri: str = Field(default="", description="Default sqlite:///<home>/mlflow/mlflow.db.")
    mlflow_artifact_root: str = Field(default="", description="Default <home>/mlflow/artifacts.")
    mlflow_experiment: str = "mercato"
    mlflow_registered_model: str = "mercato-recommender"
    reports_dir: str = Field(default="", description="Validation reports / Data Docs. Default <home>/reports.")
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    device: str = Field(default="auto", description="Training device: auto | cpu | cuda.")
    state_uri: str = Field(default="memory://", description="Real-time user state: memory:// or redis://host:port/db.")
    port: int = Field(
        default=8000,
        validation_alias=AliasChoices("RECSYS_PORT", "PORT"),
        description="Scoring API port: RECSYS_PORT, else PORT (the usual PaaS variable), else 8000.",
    )

    def _under_home(self, value: str, *parts: str) -> str:
        return value or str(self.home.joinpath(*parts).absolute())

    @property
    def lake(self) -> str:
        return self._under_home(self.lake_uri, "lake")

    @property
    def registry(self) -> str:
        return self._under_home(self.registry_uri, "registry")

    @property
    def reports(self) -> str:
        return self._under_home(self.reports_dir, "reports")

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return "sqlite:///" + str(self.home.joinpath("mlflow", "mlflow.db").absolute())

    @property
    def artifact_root(self) -> str:
        return self._under_home(self.mlflow_artifact_root, "mlflow", "artifacts")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once from the environment (call ``get_settings.cache_clear()`` in tests)."""
    return Settings()
