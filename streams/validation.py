"""Turn raw `vm.metrics` record values into engine samples, or explain precisely why not."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime

import orjson

from models.engine import FEATURES, Sample

EARLIEST_TS = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_ID_LENGTH = 128
RANGES: dict[str, tuple[float, float]] = {
    "cpu_pct": (0.0, 100.0),
    "mem_pct": (0.0, 100.0),
    "disk_read_bps": (0.0, 1e12),
    "disk_write_bps": (0.0, 1e12),
    "net_in_bps": (0.0, 1e12),
    "net_out_bps": (0.0, 1e12),
}
assert set(RANGES) == set(FEATURES)
ALLOCATION_RANGES: dict[str, tuple[float, float]] = {
    "vcpus": (1.0, 1024.0),
    "mem_mib": (64.0, 1e8),
    "net_mbps": (1.0, 1e7),
}
# (name, low, high) triples: what the per-sample loop iterates
_METRIC_BOUNDS = tuple((name, low, high) for name, (low, high) in RANGES.items())
_ALLOCATION_BOUNDS = tuple((name, low, high) for name, (low, high) in ALLOCATION_RANGES.items())


@dataclass(frozen=True)
class Rejection:
    """Why a record (or one sample of a batch, at `sample_index`) cannot be used."""

    reason: str
    detail: str
    sample_index: int | None = None


@dataclass(slots=True)  # one per sample: not frozen, which is three times as slow to create
class ValidSample:
    sample: Sample
    host: str | None
    allocation: dict[str, float] | None = None


@dataclass
class ParsedRecord:
    samples: list[ValidSample]
    rejections: list[Rejection]


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Validator:
    """Checks records against the `vm.metrics` contract in topics.yaml."""

    max_record_bytes: int = 1_048_576
    max_batch_samples: int = 10_000
    max_clock_skew_s: float = 86_400.0

    def parse(self, raw: bytes | None, now: float | None = None) -> ParsedRecord:
        """Parse one record value: a single sample or a `{"samples": [...]}` batch."""
        now = time.time() if now is None else now
        try:
            doc = self._decode(raw)
            if "samples" not in doc:
                return ParsedRecord([self._sample(doc, None, None, now)], [])
            samples = doc["samples"]
            if not isinstance(samples, list):
                raise _Invalid("bad_type", "'samples' must be a list")
            if not samples:
                raise _Invalid("empty_batch", "'samples' is empty")
            if len(samples) > self.max_batch_samples:
                raise _Invalid(
                    "batch_too_large",
                    f"{len(samples)} samples in one record (limit {self.max_batch_samples})",
                )
            host = self._optional_id(doc, "host")
            default_ts = self._ts(doc["ts"], now) if doc.get("ts") is not None else None
        except _Invalid as exc:
            return ParsedRecord([], [Rejection(exc.reason, exc.detail)])
        parsed = ParsedRecord([], [])
        for i, item in enumerate(samples):
            try:
                if not isinstance(item, dict):
                    raise _Invalid(
                        "not_object", f"sample is a {type(item).__name__}, not an object"
                    )
                parsed.samples.append(self._sample(item, host, default_ts, now))
            except _Invalid as exc:
                parsed.rejections.append(Rejection(exc.reason, exc.detail, sample_index=i))
        return parsed

    def _decode(self, raw: bytes | None) -> dict:
        if raw is None:
            raise _Invalid("not_json", "record has no value")
        if len(raw) > self.max_record_bytes:
            raise _Invalid(
                "oversized", f"record is {len(raw)} bytes (limit {self.max_record_bytes})"
            )
        try:  # the fast parser takes valid records; anything else is explained below
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = self._decode_slowly(raw)
        if not isinstance(doc, dict):
            raise _Invalid("not_object", f"value is a JSON {type(doc).__name__}, not an object")
        return doc

    @staticmethod
    def _decode_slowly(raw: bytes) -> object:
        """The standard library's parser: precise reasons, and what orjson declines to parse
        but JSON allows (lone surrogate escapes). orjson reads integers beyond 64 bits as
        floats, which lie outside every range of the contract either way."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Invalid(
                "not_utf8", f"value is not UTF-8: {exc.reason} at byte {exc.start}"
            ) from None
        try:
            doc = json.loads(text, parse_constant=_reject_constant)
        except _Invalid:
            raise
        except ValueError as exc:
            raise _Invalid("not_json", f"value is not JSON: {exc}") from None
        return doc

    def _sample(
        self, doc: dict, host: str | None, default_ts: float | None, now: float
    ) -> ValidSample:
        vm_id = doc.get("vm_id")
        if vm_id is None:
            raise _Invalid("missing_field", "missing 'vm_id'")
        if not isinstance(vm_id, str):
            raise _Invalid("bad_type", f"'vm_id' must be a string, got {type(vm_id).__name__}")
        if not vm_id or vm_id.isspace() or len(vm_id) > MAX_ID_LENGTH or not vm_id.isprintable():
            raise _Invalid(
                "out_of_range", f"'vm_id' must be 1-{MAX_ID_LENGTH} printable characters"
            )
        ts = doc.get("ts")
        if ts is None:
            if default_ts is None:
                raise _Invalid("missing_field", "missing 'ts'")
            ts = default_ts
        elif not (type(ts) is float and EARLIEST_TS <= ts <= now + self.max_clock_skew_s):
            ts = self._ts(ts, now)  # anything but an in-range float: convert or explain
        values = self._numbers(doc, _METRIC_BOUNDS)
        if not values:
            raise _Invalid("no_metrics", f"none of the metric fields {list(RANGES)} is present")
        own_host = self._optional_id(doc, "host")
        allocation = self._numbers(doc, _ALLOCATION_BOUNDS) or None
        return ValidSample(Sample(vm_id, ts, values), own_host or host, allocation)

    def _numbers(self, doc: dict, bounds: tuple[tuple[str, float, float], ...]) -> dict[str, float]:
        values: dict[str, float] = {}
        get = doc.get
        for name, low, high in bounds:
            value = get(name)
            if value is None:
                continue
            kind = type(value)
            if kind is float and low <= value <= high:  # the common case, NaN excluded
                values[name] = value
                continue
            if kind is int and low <= value <= high:  # counts such as vcpus
                values[name] = float(value)
                continue
            values[name] = self._number(name, value, low, high)
        return values

    def _number(self, name: str, value: object, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid("bad_type", f"'{name}' must be a number, got {type(value).__name__}")
        try:
            value = float(value)
        except OverflowError:
            raise _Invalid("out_of_range", f"'{name}' is too large") from None
        if not math.isfinite(value):
            raise _Invalid("not_finite", f"'{name}' is {value}")
        if not low <= value <= high:
            raise _Invalid("out_of_range", f"'{name}'={value:g} is outside [{low:g}, {high:g}]")
        return value

    def _optional_id(self, doc: dict, name: str) -> str | None:
        value = doc.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise _Invalid("bad_type", f"'{name}' must be a string, got {type(value).__name__}")
        if len(value) > MAX_ID_LENGTH:
            raise _Invalid("out_of_range", f"'{name}' is longer than {MAX_ID_LENGTH} characters")
        return value

    def _ts(self, value: object, now: float) -> float:
        if isinstance(value, bool):
            raise _Invalid("bad_timestamp", "'ts' must be epoch seconds or RFC 3339, got bool")
        if isinstance(value, int | float):
            try:
                ts = float(value)
            except OverflowError:
                raise _Invalid("bad_timestamp", "'ts' is too large") from None
            if not math.isfinite(ts):
                raise _Invalid("not_finite", f"'ts' is {ts}")
        elif isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise _Invalid("bad_timestamp", f"'ts'={value!r} is not RFC 3339") from None
            if parsed.tzinfo is None:
                raise _Invalid("bad_timestamp", f"'ts'={value!r} has no UTC offset")
            ts = parsed.timestamp()
        else:
            raise _Invalid(
                "bad_timestamp",
                f"'ts' must be epoch seconds or RFC 3339, got {type(value).__name__}",
            )
        if ts < EARLIEST_TS or ts > now + self.max_clock_skew_s:
            raise _Invalid(
                "bad_timestamp",
                f"'ts'={ts:.3f} is outside [2000-01-01, now + {self.max_clock_skew_s:g} s]",
            )
        return ts


def _reject_constant(name: str) -> float:
    raise _Invalid("not_finite", f"JSON constant {name} is not a finite number")
