"""Optional MLflow tracking: log a finished run folder (results.json + files) as one MLflow run.

Logging happens after the run, from what it wrote: results.json is on disk before MLflow is
contacted, so a tracking failure never costs a run, and `fedfraud track RUN_DIR` can log it later.
mlflow (the `fedfraud[mlflow]` extra, mlflow-skinny) is imported only when tracking is asked for.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fedfraud.config import RunConfig
from fedfraud.errors import FedfraudError

DEFAULT_EXPERIMENT = "fedfraud"
MARKER_FILE = "mlflow.json"  # in the run folder: where it was logged (sweeps skip those cells)
# Artifact path -> files of the run folder. model.pt + model.json are the plaintext global model
# and what scoring needs beside it; global_model.payload is the aggregate as the operator holds it.
ARTIFACTS = {
    "model": ("model.pt", "model.json", "global_model.payload"),
    "": ("results.json", "report.md"),
}
# Numeric per-round fields of results.json logged as step=round metrics under the same names.
ROUND_FIELDS = (
    "wall_s",
    "train_s",
    "protect_s",
    "aggregate_s",
    "reveal_s",
    "eval_s",
    "bytes_up",
    "bytes_down",
    "bytes_plain",
    "num_results",
    "num_failures",
)


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as exc:
        raise FedfraudError(
            "MLflow tracking needs mlflow; install it with: pip install 'fedfraud[mlflow]'"
        ) from exc
    return mlflow


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """The message on one line; a long one keeps its start and its end (the root cause,
    e.g. 'Connection refused', comes last in requests' errors)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else f"{text[: limit // 3]} … {text[-(2 * limit) // 3 :]}"


def client(uri: str) -> Any:
    """An MlflowClient for `uri` (a folder such as `mlruns`, file:, sqlite:, http(s)://...).
    Checks what can be checked without a round trip (mlflow installed, a known URI scheme)."""
    mlflow = _mlflow()
    if not uri.strip():
        raise FedfraudError("--mlflow-uri is empty; pass e.g. mlruns or http://HOST:5000")
    if urlparse(uri).scheme in ("", "file"):
        # MLflow 3 refuses its folder backend unless opted in; a local folder is what was asked.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        return mlflow.tracking.MlflowClient(tracking_uri=uri)
    except Exception as exc:  # MlflowException, OSError: an unusable URI
        raise FedfraudError(
            f"--mlflow-uri {uri}: {_one_line(exc, 200)}; use a folder (mlruns), "
            "sqlite:///mlflow.db or http(s)://HOST:PORT"
        ) from exc


def log_run(
    run_dir: Path,
    uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    *,
    results: Mapping[str, Any] | None = None,
    config: RunConfig | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log a finished run as one MLflow run in `experiment`; return its run id.

    params: the RunConfig fields; metrics with step=round: each round's metrics (pr_auc, ...),
    timings, bytes and ε per bank (+ epsilon_max); final, baselines, privacy and timing
    summaries; artifacts: model files, results.json, report.md and plots. `results` and `config`
    default to the run folder's results.json.
    """
    run_dir = Path(run_dir)
    if results is None:
        try:
            results = json.loads((run_dir / "results.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise FedfraudError(
                f"{run_dir / 'results.json'} is missing or unreadable; pass a finished run folder"
            ) from exc
    if config is None:
        config = RunConfig.from_mapping(results.get("config", {}))
    tracker = client(uri)  # first: says how to install mlflow if it is missing
    import requests
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    now = int(time.time() * 1000)
    params = [Param(k, str(v)) for k, v in sorted(config.to_dict().items())]
    metrics = [Metric(k, v, now, step) for k, v, step in run_metrics(results)]
    all_tags = {
        "fedfraud.version": str(results.get("fedfraud_version", "")),
        "fedfraud.run_dir": str(run_dir.resolve()),
        "model": config.model,
        "secure_agg": config.secure_agg,
        **(tags or {}),
    }
    failures = (MlflowException, OSError, requests.RequestException)
    try:
        experiment_id = _experiment_id(tracker, experiment)
        run = tracker.create_run(experiment_id, run_name=run_name or run_dir.name, tags=all_tags)
    except failures as exc:
        raise FedfraudError(f"MLflow at {uri}: {_one_line(exc)}") from exc
    run_id = run.info.run_id
    try:
        for chunk in _chunks(params, 100):  # MLflow's per-request limits
            tracker.log_batch(run_id, params=chunk)
        for chunk in _chunks(metrics, 1000):
            tracker.log_batch(run_id, metrics=chunk)
        for artifact_path, names in ARTIFACTS.items():
            for name in names:
                if (run_dir / name).is_file():
                    tracker.log_artifact(run_id, str(run_dir / name), artifact_path or None)
        for plot in sorted(run_dir.glob("*.png")):
            tracker.log_artifact(run_id, str(plot), "plots")
        tracker.set_terminated(run_id, status="FINISHED")
    except failures as exc:
        with contextlib.suppress(*failures):  # already failing: report the first error
            tracker.set_terminated(run_id, status="FAILED")
        raise FedfraudError(f"MLflow at {uri}: {_one_line(exc)}") from exc
    (run_dir / MARKER_FILE).write_text(
        json.dumps({"tracking_uri": uri, "experiment": experiment, "run_id": run_id}, indent=1)
    )
    return run_id


def logged_to(run_dir: Path, uri: str, experiment: str = DEFAULT_EXPERIMENT) -> str | None:
    """The MLflow run id this folder was logged as at `uri`/`experiment`, if it was."""
    try:
        marker = json.loads((Path(run_dir) / MARKER_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if marker.get("tracking_uri") == uri and marker.get("experiment") == experiment:
        return marker.get("run_id")
    return None


def run_metrics(results: Mapping[str, Any]) -> Iterator[tuple[str, float, int]]:
    """(key, value, step) for everything numeric worth plotting; per-round values use
    step=round, summaries step=0. Keys keep results.json's names."""
    for rnd in results.get("rounds", []):
        step = int(rnd["round"])
        # Pooled validation metrics: pooled/pr_auc, pooled/typology_recall/<typology>, ...
        for key, value, _ in _flatten("", rnd.get("metrics") or {}):
            yield key, value, step
        for key in ROUND_FIELDS:
            if _is_number(rnd.get(key)):
                yield key, float(rnd[key]), step
        eps = {b: float(e) for b, e in (rnd.get("epsilon") or {}).items() if _is_number(e)}
        for bank, value in eps.items():
            yield _key(f"epsilon/{bank}"), value, step
        if eps:
            yield "epsilon_max", max(eps.values()), step
    for section in ("final", "baselines", "timing"):
        yield from _flatten(section, results.get(section))
    analysis = results.get("analysis") or {}
    for part in ("exact_pooled", "test_pr_auc_by_round"):
        yield from _flatten(f"analysis/{part}", analysis.get(part))
    eps = (results.get("privacy") or {}).get("epsilon_per_bank") or {}
    yield from _flatten("privacy/epsilon", eps)
    spent = [float(v) for v in eps.values() if _is_number(v)]
    if spent:
        yield "privacy/epsilon_max", max(spent), 0


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, float, int]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(f"{prefix}/{key}" if prefix else str(key), item)
    elif _is_number(value):
        yield _key(prefix), float(value), 0


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . / space and colon; bank names come from data."""
    return re.sub(r"[^\w\-./ :]", "_", name)


def _experiment_id(tracker: Any, name: str) -> str:
    found = tracker.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return tracker.create_experiment(name)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
