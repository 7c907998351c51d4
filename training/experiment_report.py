"""The experiment report: statistics over the Spark job's aggregates, the readable report, its MLflow run, conclude.

```
python -m training.experiment_report report   --name N --run-date D [--alpha A] [--metric ctr] [--no-mlflow]
python -m training.experiment_report conclude --name N [--run-date D] [--alpha A] [--metric ctr] [--promote]
```

``report`` reads ``gold/experiments/<name>/dt=<D>/_AGGREGATES.json`` (written by ``jobs.experiment_report``),
the experiment's configured shares from the registry's ``experiment.json``, runs ``evaluation.online``
(per variant: units, exposures, CTR pooled and per user, add-to-cart rate, conversion, revenue per user,
each with an always-valid interval; per treatment: difference, relative lift, always-valid p-value,
CUPED variance reduction, sequential MDE; the SRM check; the decision), writes
``<reports>/<D>/experiment_<name>.json`` and ``.md`` beside the validation reports, and logs an MLflow
run ``experiment-<name>-<D>`` (metrics per variant, ``plots/lift.png``, the report and decision).

``conclude`` takes the latest report (or the run date's) and decides again on the primary metric at
``alpha``: with ``--promote``, a treatment that wins significantly with a passing SRM check is made
champion through ``training.experiment.promote_winner`` (MLflow alias + ``champion.json`` together,
the experiment marked concluded); a losing, inconclusive or SRM-failing treatment never is. The
conclusion is written to ``<reports>/<D>/experiment_<name>_conclusion.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.experiments import CONTROL, INTERLEAVING
from core.lake import Lake
from core.online import (
    EXPOSURES,
    REPORT_DEFAULTS,
    UNIT_METRIC_COLUMNS,
    aggregates_path,
    report_paths,
)
from core.settings import Settings, get_settings
from evaluation.online import (
    METRIC_NAMES,
    AnalysisOptions,
    Moments,
    analyse_ab,
    decide,
    interleaving_analysis,
)

Promoter = Callable[[str, str], Any]


# ---- the experiment as planned ---------------------------------------------------------------------
def experiment_plan(name: str | None = None, settings: Settings | None = None) -> dict[str, Any] | None:
    """The experiment ``name`` as the registry's ``experiment.json`` plans it (default: whatever is there):
    ``{"name", "type", "shares", "started_at", "status", "arms"}``. A name the document does not hold gives
    a plan without shares or start (the SRM check then cannot run); no document and no name: None."""
    from core.registry import ServingRegistry

    doc = ServingRegistry.from_settings(settings or get_settings()).experiment()
    if doc is not None and name in (None, doc["name"]):
        return {
            "name": doc["name"],
            "type": doc["type"],
            "shares": {arm["variant"]: arm["share"] for arm in doc["arms"]},
            "started_at": doc.get("started_at"),
            "status": doc["status"],
            "arms": [{k: arm[k] for k in ("variant", "model_name", "version")} for arm in doc["arms"]],
        }
    if name is None:
        return None
    return {"name": name, "type": None, "shares": None, "started_at": None, "status": None, "arms": []}


# ---- the report ----------------------------------------------------------------------------------
def build_report(
    aggregates: Mapping[str, Any],
    shares: Mapping[str, float] | None,
    options: AnalysisOptions | None = None,
    primary: str = REPORT_DEFAULTS.primary_metric,
    arms: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The report of one experiment on one day from the Spark job's aggregates (JSON-safe).

    Every configured variant appears, with zero units when none was exposed yet.
    """
    options = options or AnalysisOptions()
    head = {
        "experiment": aggregates["experiment"],
        "kind": aggregates.get("kind"),
        "run_date": aggregates["run_date"],
        "start": aggregates.get("start"),
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "alpha": options.alpha,
        "shares": dict(shares) if shares else None,
        "arms": arms or [],
        "units": aggregates.get("units"),
        "missing_attribution_days": aggregates.get("missing_attribution_days", []),
    }
    if aggregates.get("kind") == INTERLEAVING:
        data = aggregates.get("interleaving") or {}
        teams = data.get("teams") or {"control": CONTROL, "treatment": "treatment"}
        analysis = interleaving_analysis(
            int(data.get("wins", 0)),
            int(data.get("losses", 0)),
            int(data.get("ties", 0)),
            Moments.from_dict(data["units"]) if data.get("units") else None,
            options,
            control=teams["control"],
            treatment=teams["treatment"],
            first_pick=data.get("first_pick"),
        )
        analysis["requests"] = data.get("requests", 0)
        decision = decide(analysis, primary, options.alpha)
        return {**head, "primary_metric": decision["metric"], "analysis": analysis, "decision": decision}
    moments = {variant: Moments.from_dict(raw) for variant, raw in (aggregates.get("arms") or {}).items()}
    for variant in shares or {}:
        moments.setdefault(variant, Moments.from_arrays({c: [] for c in UNIT_METRIC_COLUMNS}))
    moments.setdefault(CONTROL, Moments.from_arrays({c: [] for c in UNIT_METRIC_COLUMNS}))
    ordered = {CONTROL: moments.pop(CONTROL), **dict(sorted(moments.items()))}
    analysis = analyse_ab(ordered, shares, options)
    for variant, m in ordered.items():
        analysis["variants"][variant]["exposures"] = int(m.total(EXPOSURES)) if m.n else 0
    decision = decide(analysis, primary, options.alpha)
    return {**head, "primary_metric": primary, "analysis": analysis, "decision": decision}


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:,.0f}"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:+.2f}%"


def _ci(interval: Any, fmt: Callable[[Any], str] = _num) -> str:
    if not interval or interval[0] is None:
        return "–"
    return f"[{fmt(interval[0])}, {fmt(interval[1])}]"


def _lift(comparison: Mapping[str, Any]) -> str:
    if comparison.get("lift") is None:
        return "–"
    return f"{_pct(comparison['lift'])} {_ci(comparison.get('lift_ci'), _pct)}"


def _p(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def render_markdown(report: Mapping[str, Any]) -> str:
    """A short Markdown page: who is in the experiment, one table per metric family, SRM and the decision."""
    a = report["analysis"]
    conf = f"{100 * (1 - report['alpha']):.0f}%"
    lines = [
        f"# Experiment `{report['experiment']}` — {report['run_date']}",
        "",
        f"Started {report.get('start') or 'unknown'}; primary metric **{report['primary_metric']}**, "
        f"α = {report['alpha']}; intervals are {conf} always-valid confidence sequences (safe to read every day).",
        "",
    ]
    if a["kind"] == INTERLEAVING:
        pref = a.get("preference") or {}
        lines += [
            "| requests | wins | losses | ties | Δ_AB | preference per unit (CI) | p (always valid) | sign test p |",
            "|---|---|---|---|---|---|---|---|",
            f"| {a.get('requests', 0)} | {a['wins']} | {a['losses']} | {a['ties']} | {_num(a['delta_ab'])} | "
            f"{_num(pref.get('difference'))} {_ci(pref.get('difference_ci'))} | {_p(pref.get('p_value'))} | "
            f"{_p(a.get('sign_test_p'))} |",
        ]
    else:
        variants = a["variants"]
        treatments = [v for v in variants if v != a["control"]]
        several = len(treatments) > 1
        lines += [
            "| variant | units | exposures |",
            "|---|---|---|",
            *[f"| {v} | {d['units']:,} | {d.get('exposures', 0):,} |" for v, d in variants.items()],
            "",
            f"| metric | {' | '.join(variants)} |{' treatment |' if several else ''} lift ({conf} CI) | "
            "p (always valid) | CUPED var. reduction | MDE (relative) |",
            "|---|" + "---|" * (len(variants) + several) + "---|---|---|---|",
        ]
        for metric in a["metrics"]:
            cells = [
                f"{_num(variants[v]['metrics'][metric]['value'])} {_ci(variants[v]['metrics'][metric]['ci'])}"
                for v in variants
            ]
            for t in treatments:
                c = a["comparisons"][t].get(metric, {})
                lines.append(
                    f"| {metric} | {' | '.join(cells)} |{f' {t} |' if several else ''} "
                    f"{_lift(c)} | {_p(c.get('p_value'))} | "
                    f"{_pct(c.get('variance_reduction'))} | {_pct(c.get('mde_relative'))} |"
                )
    srm = a.get("srm") or {}
    lines += [
        "",
        f"**Sample-ratio check**: {'passed' if srm.get('passed') else 'FAILED' if srm.get('checked') else 'not run'}",
    ]
    if srm.get("checked"):
        lines[-1] += f" (χ² = {_num(srm.get('chi2'), 2)}, p = {_p(srm.get('p_value'))}, α = {srm.get('alpha')})"
    else:
        lines[-1] += f" ({srm.get('reason')})"
    decision = report["decision"]
    lines += ["", f"**Decision**: {decision['status']} — {decision['reason']}"]
    if report.get("missing_attribution_days"):
        lines += ["", f"Days without attributed events: {', '.join(report['missing_attribution_days'])}."]
    return "\n".join(lines) + "\n"


def write_report_files(report: Mapping[str, Any], reports_root: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``<reports>/<run_date>/experiment_<name>.json`` and ``.md`` (each written to a temp name, then renamed)."""
    json_path, md_path = report_paths(reports_root, dt.date.fromisoformat(report["run_date"]), report["experiment"])
    json_path.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((json_path, json.dumps(report, indent=2, default=str)), (md_path, render_markdown(report))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return json_path, md_path


def save_lift_plot(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Relative lift of each treatment per metric with its always-valid interval (interleaving: the preference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = report["analysis"]
    rows: list[tuple[str, float, float, float]] = []
    if a["kind"] == INTERLEAVING:
        pref = a.get("preference") or {}
        if pref.get("difference") is not None and pref["difference_ci"][0] is not None:
            low, high = pref["difference_ci"]
            rows.append(("preference", pref["difference"], low, high))
    else:
        for t, metrics in a["comparisons"].items():
            for metric, c in metrics.items():
                if c.get("lift") is not None and c["lift_ci"][0] is not None:
                    rows.append((f"{t}: {metric}", 100 * c["lift"], 100 * c["lift_ci"][0], 100 * c["lift_ci"][1]))
    fig, ax = plt.subplots(figsize=(7, 0.5 * max(len(rows), 1) + 1.5))
    for y, (_, value, low, high) in enumerate(rows):
        ax.errorbar(value, y, xerr=[[value - low], [high - value]], fmt="o", capsize=4)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_xlabel("lift vs control, % (always-valid interval)" if a["kind"] != INTERLEAVING else "preference")
    ax.set_title(f"{report['experiment']} — {report['run_date']} — {report['decision']['status']}")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def report_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """Flat MLflow metrics: ``<variant>.<metric>`` (+ ``.ci_low/.ci_high``), ``<variant>.units/.exposures``,
    ``<treatment>.<metric>.lift/.p_value/.variance_reduction/.mde_relative``, ``srm.p_value``."""
    a = report["analysis"]
    out: dict[str, Any] = {}
    if a["kind"] == INTERLEAVING:
        pref = a.get("preference") or {}
        out.update({"wins": a["wins"], "losses": a["losses"], "ties": a["ties"], "delta_ab": a["delta_ab"]})
        out.update({"preference": pref.get("difference"), "preference.p_value": pref.get("p_value")})
        out["sign_test_p"] = a.get("sign_test_p")
    else:
        for variant, data in a["variants"].items():
            out[f"{variant}.units"] = data["units"]
            out[f"{variant}.exposures"] = data.get("exposures", 0)
            for metric, value in data["metrics"].items():
                out[f"{variant}.{metric}"] = value["value"]
                out[f"{variant}.{metric}.ci_low"], out[f"{variant}.{metric}.ci_high"] = value["ci"]
        for t, metrics in a["comparisons"].items():
            for metric, c in metrics.items():
                for key in ("lift", "p_value", "variance_reduction", "mde_relative"):
                    out[f"{t}.{metric}.{key}"] = c.get(key)
    out["srm.p_value"] = (a.get("srm") or {}).get("p_value")
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and math.isfinite(float(v))}


def log_report(report: Mapping[str, Any], settings: Settings | None = None) -> str:
    """One MLflow run ``experiment-<name>-<run_date>``: metrics, ``plots/lift.png``, the report (JSON, Markdown)
    and the decision; returns the run id."""
    import mlflow

    from training import tracking

    tracking.configure(settings or get_settings())
    decision = report["decision"]
    with mlflow.start_run(run_name=f"experiment-{report['experiment']}-{report['run_date']}") as run:
        mlflow.set_tags(
            {
                "kind": "experiment_report",
                "experiment": report["experiment"],
                "run_date": report["run_date"],
                "decision": decision["status"],
                "winner": str(decision.get("winner")),
                "promotable": str(decision["promote"]),
            }
        )
        mlflow.log_params(
            {
                "alpha": report["alpha"],
                "primary_metric": report["primary_metric"],
                "start": report.get("start"),
                "shares": json.dumps(report.get("shares")),
                "sequential_tuning_n": report["analysis"].get("sequential_tuning_n"),
            }
        )
        mlflow.log_metrics({tracking.metric_key(k): v for k, v in report_metrics(report).items()})
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifact(str(save_lift_plot(report, Path(tmp) / "lift.png")), artifact_path="plots")
            json_path, md_path = write_report_files(report, tmp)
            mlflow.log_artifact(str(json_path))
            mlflow.log_artifact(str(md_path))
            decision_path = Path(tmp) / "decision.json"
            decision_path.write_text(json.dumps(decision, indent=2))
            mlflow.log_artifact(str(decision_path))
        return str(run.info.run_id)


def log_written_report(path: str | os.PathLike[str], settings: Settings | None = None) -> str:
    """Log the report written at ``path`` (``experiment_<name>.json``) to MLflow and write it again with its
    ``mlflow_run_id``; returns the run id (the DAG's ``log_mlflow`` task)."""
    settings = settings or get_settings()
    report = json.loads(Path(path).read_text())
    report["mlflow_run_id"] = log_report(report, settings)
    write_report_files(report, Path(path).parent.parent)
    return str(report["mlflow_run_id"])


def report_experiment(
    name: str,
    run_date: dt.date,
    aggregates: Mapping[str, Any] | None = None,
    *,
    alpha: float = REPORT_DEFAULTS.alpha,
    primary: str = REPORT_DEFAULTS.primary_metric,
    plan: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    log_to_mlflow: bool = True,
) -> dict[str, Any]:
    """Build, write and (by default) log the report of ``name`` on ``run_date``; returns it with ``files`` and
    ``mlflow_run_id``. ``aggregates`` default to the Spark job's ``_AGGREGATES.json``; ``plan`` to the registry's."""
    settings = settings or get_settings()
    if aggregates is None:
        path = aggregates_path(Lake(settings.lake), name, run_date)
        try:
            aggregates = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path} is missing: run `python -m jobs.experiment_report --experiment {name} --run-date {run_date}` "
                "first (or the recsys_experiments DAG)"
            ) from None
    plan = plan if plan is not None else experiment_plan(name, settings)
    options = AnalysisOptions(alpha=alpha)
    report = build_report(aggregates, (plan or {}).get("shares"), options, primary, (plan or {}).get("arms"))
    json_path, md_path = write_report_files(report, settings.reports)
    report["files"] = {"json": str(json_path), "markdown": str(md_path)}
    if log_to_mlflow:
        report["mlflow_run_id"] = log_report(report, settings)
        write_report_files(report, settings.reports)
    return report


# ---- conclude ------------------------------------------------------------------------------------
def latest_report(name: str, reports_root: str | os.PathLike[str], run_date: dt.date | None = None) -> dict[str, Any]:
    """The report of ``name`` for ``run_date``, else the latest one written (``FileNotFoundError`` when none)."""
    root = Path(reports_root)
    if run_date is not None:
        candidates = [report_paths(root, run_date, name)[0]]
    else:
        candidates = sorted(root.glob(f"*/experiment_{name}.json"), key=lambda p: p.parent.name, reverse=True)
    for path in candidates:
        if path.is_file():
            return dict(json.loads(path.read_text()))
    raise FileNotFoundError(
        f"no report of experiment {name!r} under {root}{'' if run_date is None else f'/{run_date}'}: "
        "run `python -m training.experiment_report report` (or the recsys_experiments DAG) first"
    )


def promote_through_registry(name: str, variant: str, reason: str, settings: Settings | None = None) -> Any:
    """Promote ``variant`` of the registry's running experiment ``name`` with ``training.experiment.promote_winner``
    (MLflow alias + ``champion.json`` together, experiment concluded); refuses another experiment's name."""
    from core.registry import ServingRegistry

    settings = settings or get_settings()
    doc = ServingRegistry.from_settings(settings).experiment()
    if doc is None or doc["name"] != name:
        running = "none" if doc is None else repr(doc["name"])
        raise RuntimeError(f"experiment {name!r} is not the registry's experiment (it holds {running}): not promoted")
    lifecycle = importlib.import_module("training.experiment")
    return lifecycle.promote_winner(variant, reason=reason, settings=settings)


def conclude(
    name: str,
    *,
    promote: bool = False,
    run_date: dt.date | None = None,
    alpha: float | None = None,
    primary: str | None = None,
    settings: Settings | None = None,
    promoter: Promoter | None = None,
) -> dict[str, Any]:
    """Decide ``name`` from its latest report (or ``run_date``'s) and, with ``promote``, make a significant winner
    champion. Nothing is promoted unless the decision says so (a significant win on the primary metric and a
    passing SRM check). ``promoter(variant, reason)`` defaults to :func:`promote_through_registry`."""
    settings = settings or get_settings()
    report = latest_report(name, settings.reports, run_date)
    metric = primary or report.get("primary_metric") or REPORT_DEFAULTS.primary_metric
    decision = decide(report["analysis"], metric, alpha if alpha is not None else report.get("alpha"))
    conclusion: dict[str, Any] = {
        "experiment": name,
        "report_run_date": report["run_date"],
        "report": report.get("files", {}).get("json"),
        "decision": decision,
        "promote_requested": promote,
        "promoted": False,
        "concluded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if promote and decision["promote"]:
        act = promoter or (lambda variant, reason: promote_through_registry(name, variant, reason, settings))
        conclusion["promotion"] = act(decision["winner"], decision["reason"])
        conclusion["promoted"] = True
    elif promote:
        conclusion["note"] = f"not promoted: {decision['status']} ({decision['reason']})"
    path = report_paths(settings.reports, dt.date.fromisoformat(report["run_date"]), name)[0]
    path = path.with_name(f"experiment_{name}_conclusion.json")
    path.write_text(json.dumps(conclusion, indent=2, default=str))
    conclusion["path"] = str(path)
    return conclusion


# ---- CLI -----------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.experiment_report", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for command, text in (
        ("report", "statistics, report files and MLflow run from the Spark job's aggregates"),
        ("conclude", "decide from the latest report; --promote makes a significant winner champion"),
    ):
        cmd = sub.add_parser(command, help=text)
        cmd.add_argument("--name", required=True, help="the experiment's name")
        cmd.add_argument(
            "--run-date", type=dt.date.fromisoformat, default=None, required=command == "report", help="YYYY-MM-DD"
        )
        cmd.add_argument("--alpha", type=float, default=None, help=f"significance (default {REPORT_DEFAULTS.alpha})")
        cmd.add_argument("--metric", choices=METRIC_NAMES, default=None, help="the primary metric (default ctr)")
    sub.choices["report"].add_argument("--no-mlflow", action="store_true", help="write the files only")
    sub.choices["conclude"].add_argument(
        "--promote", action="store_true", help="make a significant winner (SRM check passed) the champion"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: prints the decision (and where the files are) as JSON; exit 2 when there is nothing to read."""
    args = parser().parse_args(argv)
    try:
        if args.command == "report":
            report = report_experiment(
                args.name,
                args.run_date,
                alpha=args.alpha if args.alpha is not None else REPORT_DEFAULTS.alpha,
                primary=args.metric or REPORT_DEFAULTS.primary_metric,
                log_to_mlflow=not args.no_mlflow,
            )
            print(json.dumps({"decision": report["decision"], "files": report["files"]}, indent=2))
        else:
            conclusion = conclude(
                args.name, promote=args.promote, run_date=args.run_date, alpha=args.alpha, primary=args.metric
            )
            print(json.dumps(conclusion, indent=2, default=str))
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
