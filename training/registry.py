"""Operator commands over the serving registry, the lake's gold run dates and MLflow, kept in step.

```
python -m training.registry status
python -m training.registry rollback [MODEL VERSION] [--reason TEXT]
python -m training.registry prune --keep N [--dry-run]
```

``status`` prints the champion pointer (and its ``previous``), the MLflow alias, every published version
(run date, data window end, MLflow version) and the experiment's state.

``rollback`` points ``champion.json`` and the MLflow alias ``champion`` at another published version — by
default the previous champion ``champion.json`` records — in the same order as promotion
(``champion.json`` first, then the alias, each retried with backoff; when the alias cannot move,
``champion.json`` is put back). It is forced: a rollback may go back to older data. The version must name
its MLflow registered version (``mlflow_model_version`` in its manifest).

``prune --keep N`` keeps, per model, the newest N published versions of the serving registry and never the
champion, the version it replaced (``previous``: the rollback target) or an arm of ``experiment.json``;
the newest N gold run dates of the lake (``<lake>/gold/<YYYY-MM-DD>``; other folders such as
``gold/experiments`` are left alone); the newest N registered versions of the MLflow model, never a
version an alias points at nor one a kept registry version names. A pruned MLflow version loses its
logged model's artifacts (local artifact stores) and its training export. ``--dry-run`` lists what
would go and removes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.config import Config, load_config
from core.registry import MANIFEST, RegistryError, ServingRegistry
from core.settings import Settings, get_settings
from training.promote import PublishFailed, with_retries


class RegistryCommandRefused(RuntimeError):
    """The command cannot be carried out; the message says why and what to do."""


def _ref(model_name: Any, version: Any) -> tuple[str, str]:
    return str(model_name), str(version)


def _client(settings: Settings) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def _alias_version(settings: Settings) -> str | None:
    from training import tracking

    version = tracking.champion_version(settings)
    return None if version is None else str(version.version)


def models(registry: ServingRegistry) -> list[str]:
    """Model names that have at least one published version."""
    names = {key.split("/")[0] for key in registry.backend.list_keys("") if key.endswith(f"/{MANIFEST}")}
    return sorted(n for n in names if registry.versions(n))


def status(settings: Settings | None = None, registry: ServingRegistry | None = None) -> dict[str, Any]:
    """The champion, the MLflow alias, the published versions and the experiment, as one JSON-safe dict."""
    settings = settings or get_settings()
    registry = registry or ServingRegistry.from_settings(settings)
    published: dict[str, list[dict[str, Any]]] = {}
    for name in models(registry):
        rows = []
        for version in registry.versions(name):
            manifest = registry.manifest(name, version)
            rows.append(
                {
                    "version": version,
                    "run_date": manifest.get("run_date"),
                    "data_end": (manifest.get("data_window") or {}).get("end"),
                    "mlflow_model_version": manifest.get("mlflow_model_version"),
                    "erased_users": manifest.get("erased_users", 0),
                }
            )
        published[name] = rows
    try:
        experiment = registry.experiment()
    except RegistryError as exc:
        experiment = {"error": str(exc)}
    return {
        "registry": registry.uri,
        "champion": registry.champion(),
        "mlflow_alias": _alias_version(settings),
        "versions": published,
        "experiment": None
        if experiment is None
        else {k: experiment.get(k) for k in ("name", "status", "winner", "error") if k in experiment},
        "gold_run_dates": [p.name for p in _gold_dates(Path(settings.lake))],
    }


def rollback(
    model_name: str | None = None,
    version: str | None = None,
    reason: str | None = None,
    settings: Settings | None = None,
    registry: ServingRegistry | None = None,
    cfg: Config | None = None,
    sleep: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Point ``champion.json`` and the MLflow alias at ``model_name/version`` (default: the previous champion)."""
    import time

    from training import tracking

    settings = settings or get_settings()
    registry = registry or ServingRegistry.from_settings(settings)
    rules = (cfg or load_config()).promotion
    current = registry.champion()
    if (model_name is None) != (version is None):
        raise RegistryCommandRefused("give both MODEL and VERSION, or neither (the previous champion)")
    if model_name is None:
        previous = (current or {}).get("previous")
        if not previous:
            raise RegistryCommandRefused(
                "champion.json records no previous champion to roll back to; name one: rollback MODEL VERSION"
            )
        model_name, version = str(previous["model_name"]), str(previous["version"])
    assert version is not None
    try:
        manifest = registry.complete_manifest(model_name, version, "rolling back to it")
    except RegistryError as exc:
        raise RegistryCommandRefused(str(exc)) from None
    mlflow_version = manifest.get("mlflow_model_version")
    if not mlflow_version:
        raise RegistryCommandRefused(
            f"{model_name}/{version} names no MLflow registered version (mlflow_model_version): the MLflow alias "
            "cannot move with champion.json"
        )
    wait = sleep or time.sleep
    note = reason or "rollback"

    def retried(action: Callable[[], Any], what: str) -> Any:
        return with_retries(action, what, rules.publish_attempts, rules.publish_backoff_seconds, wait)

    tracking.configure(settings)
    previous_alias = _alias_version(settings)
    pointer = retried(
        lambda: registry.set_champion(model_name, version, force=True, reason=note),
        f"pointing champion.json at {model_name}/{version}",
    )
    try:
        retried(lambda: tracking.set_champion(settings, str(mlflow_version)), f"moving the alias to v{mlflow_version}")
    except BaseException:
        if current is not None:
            registry.set_champion(current["model_name"], current["version"], force=True, reason="alias move failed")
        raise
    return {
        "champion": pointer,
        "mlflow_alias": str(mlflow_version),
        "previous_mlflow_alias": previous_alias,
        "replaced": None if current is None else f"{current['model_name']}/{current['version']}",
    }


def _gold_dates(lake: Path) -> list[Path]:
    """The lake's gold run-date folders, oldest first (only names that are ISO dates)."""
    gold = lake / "gold"
    if not gold.is_dir():
        return []
    found = []
    for path in gold.iterdir():
        try:
            dt.date.fromisoformat(path.name)
        except ValueError:
            continue
        if path.is_dir():
            found.append(path)
    return sorted(found, key=lambda p: p.name)


def prune(
    keep: int,
    dry_run: bool = False,
    settings: Settings | None = None,
    registry: ServingRegistry | None = None,
) -> dict[str, Any]:
    """Remove what lies beyond the newest ``keep`` (see the module docstring); returns what went (or would)."""
    if keep < 1:
        raise RegistryCommandRefused(f"--keep {keep}: keep at least 1")
    settings = settings or get_settings()
    registry = registry or ServingRegistry.from_settings(settings)

    protected: set[tuple[str, str]] = set()
    champion = registry.champion()
    if champion is not None:
        protected.add(_ref(champion["model_name"], champion["version"]))
        if champion.get("previous"):
            protected.add(_ref(champion["previous"]["model_name"], champion["previous"]["version"]))
    try:
        experiment = registry.experiment()
    except RegistryError as exc:
        raise RegistryCommandRefused(f"experiment.json cannot be read ({exc}); fix it before pruning") from None
    for arm in (experiment or {}).get("arms") or []:
        protected.add(_ref(arm["model_name"], arm["version"]))

    removed_versions: list[str] = []
    kept_mlflow: set[str] = set()
    for name in models(registry):
        versions = registry.versions(name)
        newest = set(versions[-keep:])
        for version in versions:
            if version in newest or (name, version) in protected:
                mlflow_version = registry.manifest(name, version).get("mlflow_model_version")
                if mlflow_version:
                    kept_mlflow.add(str(mlflow_version))
                continue
            removed_versions.append(f"{name}/{version}")
            if not dry_run:
                registry.delete_version(name, version)

    dates = _gold_dates(Path(settings.lake))
    removed_gold = [p.name for p in dates[: max(len(dates) - keep, 0)]]
    if not dry_run:
        for path in dates[: max(len(dates) - keep, 0)]:
            shutil.rmtree(path)

    removed_mlflow = _prune_mlflow(settings, keep, kept_mlflow, dry_run)
    return {
        "keep": keep,
        "dry_run": dry_run,
        "registry_versions": removed_versions,
        "gold_run_dates": removed_gold,
        "mlflow_versions": removed_mlflow,
        "protected": sorted(f"{m}/{v}" for m, v in protected),
    }


def _prune_mlflow(settings: Settings, keep: int, kept: set[str], dry_run: bool) -> list[str]:
    from mlflow.exceptions import MlflowException

    from training import tracking

    tracking.configure(settings)
    client = _client(settings)
    name = settings.mlflow_registered_model
    try:
        versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    except MlflowException:
        return []
    newest = {str(v.version) for v in versions[-keep:]}
    removed = []
    for version in versions:
        number = str(version.version)
        if number in newest or number in kept or version.aliases:
            continue
        removed.append(number)
        if dry_run:
            continue
        export = (version.tags or {}).get("artifact_dir")
        client.delete_model_version(name, number)
        if version.model_id:
            try:
                location = client.get_logged_model(version.model_id).artifact_location
            except MlflowException:
                location = None
            _remove_local(location)
            with contextlib.suppress(MlflowException):
                client.delete_logged_model(version.model_id)
        if export and Path(export).is_dir() and Path(settings.home).absolute() in Path(export).absolute().parents:
            shutil.rmtree(export)
    return removed


def _remove_local(uri: str | None) -> None:
    """Delete a local (``file:`` or plain path) artifact folder; remote stores keep theirs (their lifecycle rules)."""
    if not uri:
        return
    if uri.startswith("file://"):
        uri = uri.removeprefix("file://")
    elif "://" in uri:
        return
    path = Path(uri)
    if path.is_dir():
        shutil.rmtree(path)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m training.registry", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="champion, MLflow alias, published versions, experiment")
    back = sub.add_parser("rollback", help="champion.json and the MLflow alias to another version (default: previous)")
    back.add_argument("target", nargs="*", metavar="MODEL VERSION", help="default: the previous champion")
    back.add_argument("--reason", default=None)
    trim = sub.add_parser("prune", help="keep the newest N versions / gold run dates / MLflow versions")
    trim.add_argument("--keep", type=int, required=True)
    trim.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "status":
            result = status()
        elif args.command == "rollback":
            if len(args.target) not in (0, 2):
                raise RegistryCommandRefused("rollback takes MODEL VERSION, or nothing for the previous champion")
            model, version = (args.target[0], args.target[1]) if args.target else (None, None)
            result = rollback(model, version, reason=args.reason)
        else:
            result = prune(args.keep, dry_run=args.dry_run)
    except (RegistryCommandRefused, RegistryError, PublishFailed) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=2, sort_keys=True, default=str)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
