"""Replay a metrics CSV through the worker's anomaly engine, offline, in order, without look-ahead.

Two input layouts are read:

- NAB's ``timestamp,value``: ``value`` becomes the chosen metric, ``vm_id`` is the file stem;
- the ``vm.metrics`` columns ``vm_id,host,ts,cpu_pct,...`` (``host`` and any metric except the
  chosen one may be absent or empty).

Timestamps are epoch seconds, RFC 3339, or ``YYYY-MM-DD HH:MM:SS`` (taken as UTC). Rows are
read lazily and handed to ``AnomalyEngine.process`` in chunks, as the worker does, so a row's
score depends only on the rows before it. The output has one row per input row:
``timestamp,value,anomaly_score,alert`` where ``anomaly_score`` is ``Assessment.score / 100``
at full double precision and ``alert`` is 1 where the engine opened an incident or raised the
severity of an open one.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from models.engine import FEATURES, AnomalyEngine, EngineConfig, Sample

OUTPUT_COLUMNS = ("timestamp", "value", "anomaly_score", "alert")
NAB_COLUMNS = ("timestamp", "value")
METRICS_COLUMNS = ("vm_id", "host", "ts", *FEATURES)
METRIC_NAMES = METRICS_COLUMNS[3:]
DEFAULT_CHUNK = 256
_SEVERITY_ORDER = ("info", "low", "minor", "warning", "medium", "major", "high", "critical")


class ReplayInputError(ValueError):
    """The input CSV cannot be replayed; the message names the file and line."""


@dataclass(frozen=True)
class ReplaySummary:
    """What one replay did."""

    input_path: str
    output_path: str
    input_format: str
    metric: str
    rows: int
    vms: int
    alerts: int
    seconds: float

    @property
    def us_per_row(self) -> float:
        return 1e6 * self.seconds / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class _Row:
    timestamp: str
    value: str
    sample: Sample


def replay_csv(
    input_path: str | Path,
    output_path: str | Path,
    metric: str = "cpu_pct",
    config: EngineConfig | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> ReplaySummary:
    """Run a fresh engine over ``input_path`` and write per-row scores and alerts.

    The output is written next to ``output_path`` and moved into place only when the whole
    input was valid; a malformed input raises ``ReplayInputError``.
    """
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRIC_NAMES)}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    source, target = Path(input_path), Path(output_path)
    partial = target.with_name(target.name + ".partial")
    engine = AnomalyEngine(config=config if config is not None else EngineConfig())
    alerts = AlertTracker()
    rows = 0
    vms: set[str] = set()
    busy = 0.0
    try:
        with source.open(newline="") as reader_file, partial.open("w", newline="") as out_file:
            writer = csv.writer(out_file, lineterminator="\n")
            writer.writerow(OUTPUT_COLUMNS)
            input_format, row_iter = _read_rows(reader_file, source, metric)
            chunk: list[_Row] = []
            for row in row_iter:
                chunk.append(row)
                if len(chunk) == chunk_size:
                    busy += _run_chunk(engine, alerts, chunk, writer, source)
                    rows += len(chunk)
                    vms.update(r.sample.vm_id for r in chunk)
                    chunk = []
            if chunk:
                busy += _run_chunk(engine, alerts, chunk, writer, source)
                rows += len(chunk)
                vms.update(r.sample.vm_id for r in chunk)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return ReplaySummary(
        str(source), str(target), input_format, metric, rows, len(vms), alerts.count, busy
    )


class AlertTracker:
    """Turns engine events into 0/1 alerts: an incident opens, or its severity rises."""

    def __init__(self) -> None:
        self.count = 0
        self._severity: dict[str, float | None] = {}

    def alert(self, vm_id: str, event: dict | None) -> int:
        if not event:
            return 0
        key = str(event.get("incident_id", vm_id))
        status = event.get("status")
        severity = severity_rank(event.get("severity"))
        fired = 0
        if status == "open":
            fired = 1
            self._severity[key] = severity
        elif status == "update":
            before = self._severity.get(key)
            fired = int(severity is not None and before is not None and severity > before)
            if severity is not None and (before is None or severity > before):
                self._severity[key] = severity
        elif status == "resolved":
            self._severity.pop(key, None)
        self.count += fired
        return fired


def severity_rank(severity: object) -> float | None:
    """Comparable rank of a severity given as a number or a name (info < low < ... < critical)."""
    if isinstance(severity, bool) or severity is None:
        return None
    if isinstance(severity, int | float):
        return float(severity) if math.isfinite(severity) else None
    if isinstance(severity, str):
        name = severity.strip().lower()
        return float(_SEVERITY_ORDER.index(name)) if name in _SEVERITY_ORDER else None
    return None


def parse_ts(text: str) -> float:
    """Epoch seconds from epoch seconds, RFC 3339 or ``YYYY-MM-DD HH:MM:SS`` (naive = UTC)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"timestamp {text!r} is not finite")
        return value
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _run_chunk(
    engine: AnomalyEngine, alerts: AlertTracker, chunk: list[_Row], writer, source: Path
) -> float:
    started = time.perf_counter()
    assessments = engine.process([r.sample for r in chunk])
    elapsed = time.perf_counter() - started
    if len(assessments) != len(chunk):
        raise RuntimeError(f"engine returned {len(assessments)} assessments for {len(chunk)} rows")
    for row, assessment in zip(chunk, assessments, strict=True):
        score = float(assessment.score) / 100.0
        fired = alerts.alert(row.sample.vm_id, assessment.event)
        writer.writerow((row.timestamp, row.value, repr(score), fired))
    return elapsed


def _read_rows(handle, source: Path, metric: str) -> tuple[str, Iterator[_Row]]:
    reader = csv.reader(handle)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise ReplayInputError(f"{source}: empty file, expected a header row") from None
    if tuple(header) == NAB_COLUMNS:
        return "nab", _nab_rows(reader, source, metric)
    missing = [name for name in ("vm_id", "ts", metric) if name not in header]
    if not missing:
        return "vm.metrics", _metrics_rows(reader, source, metric, header)
    raise ReplayInputError(
        f"{source}:1: unrecognised header {','.join(header)!r}; expected "
        f"{','.join(NAB_COLUMNS)!r} or the vm.metrics columns {','.join(METRICS_COLUMNS)!r} "
        f"(missing {', '.join(missing)})"
    )


def _nab_rows(reader, source: Path, metric: str) -> Iterator[_Row]:
    vm_id = source.stem
    for line, cells in enumerate(reader, start=2):
        if not cells:
            continue
        if len(cells) != 2:
            raise ReplayInputError(f"{source}:{line}: expected 2 cells, got {len(cells)}")
        ts = _field(source, line, "timestamp", cells[0], parse_ts)
        value = _field(source, line, "value", cells[1], _finite)
        yield _Row(cells[0], cells[1], Sample(vm_id, ts, {metric: value}))


def _metrics_rows(reader, source: Path, metric: str, header: list[str]) -> Iterator[_Row]:
    position = {name: i for i, name in enumerate(header)}
    features = [name for name in METRIC_NAMES if name in position]
    for line, cells in enumerate(reader, start=2):
        if not cells:
            continue
        if len(cells) != len(header):
            raise ReplayInputError(
                f"{source}:{line}: expected {len(header)} cells, got {len(cells)}"
            )
        vm_id = cells[position["vm_id"]].strip()
        if not vm_id:
            raise ReplayInputError(f"{source}:{line}: empty vm_id")
        raw_ts = cells[position["ts"]]
        ts = _field(source, line, "ts", raw_ts, parse_ts)
        values = {}
        for name in features:
            cell = cells[position[name]]
            if cell.strip() or name == metric:
                values[name] = _field(source, line, name, cell, _finite)
        yield _Row(raw_ts, cells[position[metric]], Sample(vm_id, ts, values))


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _field(source: Path, line: int, name: str, text: str, parse) -> float:
    try:
        return parse(text)
    except ValueError as error:
        raise ReplayInputError(f"{source}:{line}: bad {name} {text!r}: {error}") from None
