"""The worker's web views: health, stats, VMs, alerts, feedback and the dashboard.

Every answer is JSON except `/` and `/static/*` (the dashboard) and `/metrics` (Prometheus text,
served by Faust's sensor). Errors are `{"error": <code>, "detail": <explanation>}` with a 4xx
status; an unexpected failure is logged and answered with a generic 500, never a traceback.
The field names are documented in docs/web-api.md and are kept stable.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import faust
from faust.web import Request, Response, View

from models.classification import KINDS, SEVERITIES
from models.incidents import parse_incident_id
from streams import telemetry
from streams.history import RecentHistory
from streams.processor import VERDICTS, MetricsProcessor
from streams.settings import Settings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
STATUSES = ("open", "update", "resolved")
VM_SORTS = ("score", "vm_id", "last_ts")
_STATE_SAMPLE = 64  # VMs whose state size is measured to estimate the total
_STATE_MAX_AGE_S = 10.0  # how long a measured mean state size is reused


class ApiError(Exception):
    """A client error answered as `{"error": code, "detail": detail}`."""

    def __init__(self, status: int, code: str, detail: str, headers: dict | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def guarded(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Turn ApiError into its JSON answer and any other exception into a bare 500."""

    @functools.wraps(handler)
    async def wrapped(self: View, request: Request, **kwargs: object) -> Response:
        try:
            return await handler(self, request, **kwargs)
        except ApiError as exc:
            return self.json(
                {"error": exc.code, "detail": exc.detail}, status=exc.status, headers=exc.headers
            )
        except Exception:
            log.exception("web view %s failed", type(self).__name__)
            return self.json(
                {"error": "internal", "detail": "internal error; details are in the worker log"},
                status=500,
            )

    return wrapped


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"'{name}' must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_parameter", f"'{name}' must be between {low} and {high}")
    return value


def query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise ApiError(400, "bad_parameter", f"'{name}' must be one of {list(choices)}")
    return raw


async def read_json_body(request: Request, limit: int) -> dict:
    """The request body as a JSON object, at most `limit` bytes."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ApiError(413, "body_too_large", f"request body is limited to {limit} bytes")
    body = bytearray()
    while True:
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"request body is limited to {limit} bytes")
    try:
        doc = json.loads(bytes(body))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "not_json", "request body must be a JSON object") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "not_object", "request body must be a JSON object")
    return doc


def optional_text(doc: dict, name: str, max_len: int) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise ApiError(400, "bad_field", f"'{name}' must be a string of 1 to {max_len} characters")
    return value


class RateMeter:
    """Per-second rates of running totals over the last `window` seconds."""

    def __init__(self, window: int = 10) -> None:
        self.marks: deque[tuple[float, dict[str, float]]] = deque(maxlen=window + 1)

    def mark(self, totals: dict[str, float], now: float | None = None) -> None:
        self.marks.append((time.monotonic() if now is None else now, dict(totals)))

    def rates(self) -> dict[str, float | None]:
        """Rates per key; None while fewer than two marks span some time (not known yet)."""
        if not self.marks:
            return {}
        (t0, first), (t1, last) = self.marks[0], self.marks[-1]
        span = t1 - t0
        if span <= 0:
            return dict.fromkeys(last)
        return {k: round((last[k] - first.get(k, 0.0)) / span, 3) for k in last}


class StateSizeEstimate:
    """Mean serialised model state per VM, from a random sample of VMs, measured again only
    once `max_age_s` has passed.

    Serialising 64 VMs takes milliseconds of the core the worker's records run on, and a VM's
    state stops growing after its warm-up: measuring on every `/stats` call took about 5 % of
    the busy time of a worker polled five times a second.
    """

    def __init__(self, sample: int = _STATE_SAMPLE, max_age_s: float = _STATE_MAX_AGE_S) -> None:
        self.sample, self.max_age_s = sample, max_age_s
        self._mean: float | None = None
        self._sampled = 0
        self._at: float | None = None

    def read(
        self,
        vm_ids: Callable[[], list[str]],
        size_of: Callable[[str], int | None],
        tracked: int,
        now: float | None = None,
    ) -> dict:
        """The estimate for `tracked` VMs; sizes are measured anew when none is recent."""
        now = time.monotonic() if now is None else now
        if self._at is None or now - self._at >= self.max_age_s:  # None: nothing measured
            ids = vm_ids()
            picked = random.sample(ids, min(self.sample, len(ids)))
            # 0: a VM the engine no longer holds (its partition moved since the history saw it)
            sizes = [s for s in map(size_of, picked) if isinstance(s, int) and s > 0]
            self._mean = sum(sizes) / len(sizes) if sizes else None
            self._sampled = len(sizes)
            self._at = now if sizes else None
        mean = self._mean
        return {
            "per_vm_mean": None if mean is None else round(mean, 1),
            "estimated_total": None if mean is None else int(round(mean * tracked)),
            "sampled_vms": self._sampled,
            "age_s": None if self._at is None else round(now - self._at, 3),
        }


def consumer_lag(app: faust.App, topic_names: set[str]) -> list[dict]:
    """Highwater, committed and read offsets and lag for each assigned input partition."""
    consumer = app.consumer
    try:
        assigned = consumer.assignment()
    except Exception:  # consumer thread not started yet
        return []
    committed_map = getattr(consumer, "_committed_offset", None) or getattr(
        app.monitor, "tp_committed_offsets", {}
    )
    read_map = getattr(consumer, "_read_offset", None) or getattr(
        app.monitor, "tp_read_offsets", {}
    )
    rows = []
    for tp in sorted(assigned, key=lambda tp: (tp.topic, tp.partition)):
        if tp.topic not in topic_names:
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            highwater = None
        committed, read = committed_map.get(tp), read_map.get(tp)
        # committed = next offset to consume (Kafka's convention); read = last offset read
        position = max(committed or 0, read + 1 if read is not None else 0)
        lag = None if highwater is None else max(0, highwater - position)
        rows.append(
            {
                "topic": tp.topic,
                "partition": tp.partition,
                "highwater": highwater,
                "committed_offset": committed,
                "read_offset": read,
                "lag": lag,
            }
        )
    return rows


def register_views(
    app: faust.App,
    processor: MetricsProcessor,
    readiness: dict,
    started_at: float,
    settings: Settings | None = None,
    feedback_topic: faust.TopicT | None = None,
    recent_windows: Callable[[str], dict] | None = None,
    recent_host_windows: Callable[[str], dict] | None = None,
) -> None:
    """Attach every view to `app` (and the history's Prometheus collector to the registry)."""
    settings = settings or Settings()
    if processor.stats.samples == 0:
        processor.history = RecentHistory(
            samples_per_vm=settings.history_samples,
            series_vms=settings.history_series_vms,
            forecast_source=processor.history.forecast_source,
        )
    telemetry.watch_history(processor.history, settings.forecast_top_n)
    rates = RateMeter()
    input_topics: set[str] = set()  # names of the topics the agents consume, filled lazily

    def history() -> RecentHistory:
        return processor.history

    def totals() -> dict[str, float]:
        s = processor.stats
        return {"records": float(sum(s.records.values())), "samples": float(s.samples)}

    @app.timer(interval=1.0)
    async def _sample_rates() -> None:
        rates.mark(totals())

    @app.timer(interval=5.0)
    async def _prune_history() -> None:
        """VMs whose partition moved to another worker leave this worker's views."""
        knows = getattr(processor.engine, "knows", None)
        if knows is not None:
            history().prune(knows)

    def engine_call(name: str, *args: object, default: object = None) -> object:
        fn = getattr(processor.engine, name, None)
        return default if fn is None else fn(*args)

    state_sizes = StateSizeEstimate()

    def model_state_bytes() -> dict:
        return state_sizes.read(
            lambda: list(history().latest),
            lambda vm_id: engine_call("state_bytes", vm_id, default=None),
            engine_call("tracked_vms", default=0) or 0,
        )

    def known_vm(vm_id: str) -> None:
        knows = getattr(processor.engine, "knows", None)
        if history().knows(vm_id) and (knows is None or knows(vm_id)):
            return
        snap = engine_call("vm_snapshot", vm_id, default=None)
        if isinstance(snap, dict) and snap.get("known"):
            return
        raise ApiError(
            404,
            "unknown_vm",
            f"VM {vm_id!r} has no state on this worker: its metrics are consumed by another "
            "worker (or none arrived yet); ask the worker that owns its partition",
        )

    async def from_owner(view: View, request: Request, vm_id: str) -> Response | None:
        """The owning worker's answer for a VM this worker does not hold, or None.

        The owner is the worker assigned the partition the VM's routing key hashes to on the
        feedback topic (co-partitioned with the metrics topic, so the same worker). The key is
        the `routing_key` query parameter, by default the VM id (single-sample records are
        keyed by VM; batch records by host, so pass `?routing_key=<host>` for those).
        """
        if feedback_topic is None or request.query.get("routed") == "1":
            return None
        key = request.query.get("routing_key") or vm_id
        try:
            owner = app.router.external_topic_key_store(feedback_topic, key)
        except Exception:  # no assignment metadata yet, or partition unassigned
            return None
        me = app.conf.canonical_url
        if (owner.host, owner.port) == (me.host, me.port):
            return None
        url = owner.with_path(request.path).with_query({**request.query, "routed": "1"})
        try:
            async with app.http_client.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                body = await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(
                502, "owner_unreachable", f"the worker owning {vm_id!r} ({owner}) did not answer"
            ) from exc
        return view.bytes(
            body,
            content_type="application/json",
            status=status,
            headers={"X-Novacron-Answered-By": str(owner)},
        )

    def static_files() -> dict[str, tuple[bytes, str]]:
        files = {}
        if STATIC_DIR.is_dir():
            for path in STATIC_DIR.iterdir():
                if path.is_file() and path.suffix in _CONTENT_TYPES:
                    files[path.name] = (path.read_bytes(), _CONTENT_TYPES[path.suffix])
        return files

    assets = static_files()

    @app.page("/health")
    class Health(View):
        """Liveness: the worker's event loop answers."""

        @guarded
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "uptime_s": round(time.time() - started_at, 3)})

    @app.page("/ready")
    class Ready(View):
        """Readiness: a rebalance completed (partitions assigned, table state restored from
        the changelogs) and no rebalance or recovery is under way now."""

        @guarded
        async def get(self, request: Request) -> Response:
            assigned = bool(readiness["assigned"])
            rebalancing = bool(app.rebalancing)
            recovering = bool(getattr(app, "in_recovery", False))
            ready = assigned and not rebalancing and not recovering
            return self.json(
                {
                    "ready": ready,
                    "assigned": assigned,
                    "rebalancing": rebalancing,
                    "recovering": recovering,
                },
                status=200 if ready else 503,
            )

    @app.page("/stats")
    class Stats(View):
        """Live counters of this worker."""

        @guarded
        async def get(self, request: Request) -> Response:
            s, h = processor.stats, history()
            if not input_topics:
                input_topics.update(
                    str(t)
                    for agent in app.agents.values()
                    for t in getattr(agent.channel, "topics", ())
                )
            by_severity: dict[str, int] = {}
            by_kind: dict[str, int] = {}
            by_status: dict[str, int] = {}
            for (status, severity, kind), n in h.alert_counts.items():
                by_status[str(status)] = by_status.get(str(status), 0) + n
                if status == "open":
                    by_severity[str(severity)] = by_severity.get(str(severity), 0) + n
                    by_kind[str(kind)] = by_kind.get(str(kind), 0) + n
            lag = consumer_lag(app, input_topics)
            return self.json(
                {
                    "uptime_s": round(time.time() - started_at, 3),
                    "rates": rates.rates(),
                    "records": dict(s.records),
                    "samples": s.samples,
                    "dlq": dict(s.dlq),
                    "alerts": {
                        "messages_by_status": by_status,
                        "opened_by_severity": by_severity,
                        "opened_by_kind": by_kind,
                        "open_incidents": len(h.open_incidents),
                    },
                    "forecasts": dict(h.forecast_counts),
                    "actions": {
                        f"{a}:{r}": n for (a, r), n in sorted(h.action_counts.items(), key=str)
                    },
                    "consumer_lag": {
                        "total": sum(p["lag"] or 0 for p in lag),
                        "partitions": lag,
                    },
                    "vms_tracked": engine_call("tracked_vms", default=0),
                    "model_state_bytes": model_state_bytes(),
                    "history": h.sizes(),
                    "last_sample_ts": s.last_sample_ts,
                    "gc": telemetry.GC_PAUSES.snapshot(),
                    # the package of the loop's class: "uvloop" or "asyncio"
                    "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
                }
            )

    @app.page("/vms")
    class VMs(View):
        """Paged VM list of this worker, by current anomaly score by default."""

        @guarded
        async def get(self, request: Request) -> Response:
            sort = query_choice(request, "sort", VM_SORTS) or "score"
            order = query_choice(request, "order", ("asc", "desc")) or (
                "asc" if sort == "vm_id" else "desc"
            )
            offset = query_int(request, "offset", 0, 0, 10_000_000)
            limit = query_int(request, "limit", 50, 1, 1000)
            only_open = query_choice(request, "open", ("true", "false")) == "true"
            total, rows = history().vm_rows(sort, order == "desc", offset, limit, only_open)
            return self.json(
                {
                    "total": total,
                    "offset": offset,
                    "limit": limit,
                    "sort": sort,
                    "order": order,
                    "vms": rows,
                }
            )

    @app.page("/vms/{vm_id}")
    class VMDetail(View):
        """One VM: recent metrics and scores, incidents, forecasts, actions, model info."""

        @guarded
        async def get(self, request: Request, vm_id: str) -> Response:
            try:
                known_vm(vm_id)
            except ApiError:
                routed = await from_owner(self, request, vm_id)
                if routed is not None:
                    return routed
                raise
            h = history()
            row = h.vm_row(vm_id)
            snapshot = engine_call("vm_snapshot", vm_id, default=None)
            return self.json(
                {
                    **row,
                    "series": h.vm_series(vm_id),
                    "alerts": h.alerts_of(vm_id),
                    "forecasts": h.forecasts_of(vm_id),
                    "actions": h.actions_of(vm_id),
                    "model": snapshot if isinstance(snapshot, dict) else None,
                    "windows": recent_windows(vm_id) if recent_windows else {},
                }
            )

    @app.page("/hosts/{host}")
    class HostDetail(View):
        """One host: its VMs on this worker and their summed 1-min and 5-min windows."""

        @guarded
        async def get(self, request: Request, host: str) -> Response:
            vms = processor.vms_on(host)
            if not vms:
                raise ApiError(404, "unknown_host", f"no VM of host {host!r} on this worker")
            windows = recent_host_windows(host) if recent_host_windows else {}
            return self.json({"host": host, "vms": vms, "windows": windows})

    @app.page("/alerts")
    class Alerts(View):
        """Recent incident messages of this worker, newest first."""

        @guarded
        async def get(self, request: Request) -> Response:
            severity = query_choice(request, "severity", SEVERITIES)
            kind = query_choice(request, "kind", KINDS)
            status = query_choice(request, "status", STATUSES)
            vm_id = request.query.get("vm_id") or None
            limit = query_int(request, "limit", 100, 1, 1000)
            alerts = history().recent_alerts_matching(severity, kind, vm_id, status, limit)
            return self.json({"count": len(alerts), "alerts": alerts})

    @app.page("/feedback")
    class Feedback(View):
        """Operator verdict on an incident, produced to the feedback topic (same path)."""

        @guarded
        async def post(self, request: Request) -> Response:
            try:
                return await self._post(request)
            except ApiError as exc:
                telemetry.FEEDBACK_REQUESTS.labels(exc.code).inc()
                raise

        async def _post(self, request: Request) -> Response:
            token = settings.feedback_token
            if not token or feedback_topic is None:
                raise ApiError(
                    403,
                    "feedback_disabled",
                    "POST /feedback is disabled on this worker: set NOVACRON_FEEDBACK_TOKEN "
                    "to enable it (or produce verdicts to the feedback topic directly)",
                )
            auth = request.headers.get("Authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                raise ApiError(
                    401,
                    "unauthorized",
                    "send 'Authorization: Bearer <NOVACRON_FEEDBACK_TOKEN>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            doc = await read_json_body(request, settings.max_body_bytes)
            incident_id = optional_text(doc, "incident_id", 300)
            if incident_id is None:
                raise ApiError(400, "missing_field", "'incident_id' is required")
            verdict = doc.get("verdict")
            if verdict not in VERDICTS:
                raise ApiError(400, "bad_field", f"'verdict' must be one of {list(VERDICTS)}")
            operator = optional_text(doc, "operator", 128)
            routing_key = optional_text(doc, "routing_key", 256)
            alert = history().incidents.get(incident_id)
            parsed = parse_incident_id(incident_id)
            if alert is not None:
                vm_id = alert.get("vm_id")
                key = alert.get("routing_key") or vm_id
            elif routing_key is not None and parsed is not None:
                vm_id, key = parsed[0], routing_key
            else:
                raise ApiError(
                    404,
                    "unknown_incident",
                    f"incident {incident_id!r} is not among this worker's recent incidents; "
                    "pass the alert's 'routing_key' to route the verdict anyway",
                )
            message = {
                "incident_id": incident_id,
                "vm_id": vm_id,
                "verdict": verdict,
                "operator": operator,
                "ts": time.time(),
            }
            await feedback_topic.send(
                key=str(key).encode(),
                value=json.dumps(message, separators=(",", ":")).encode(),
            )
            telemetry.FEEDBACK_REQUESTS.labels("accepted").inc()
            return self.json(
                {"accepted": True, **message, "topic": feedback_topic.get_topic_name(), "key": key},
                status=202,
            )

    @app.page("/")
    class Dashboard(View):
        """The live dashboard (static files shipped in the package)."""

        @guarded
        async def get(self, request: Request) -> Response:
            if "index.html" not in assets:
                raise ApiError(404, "no_dashboard", "dashboard files are not installed")
            body, content_type = assets["index.html"]
            return self.bytes(body, content_type=content_type)

    @app.page("/static/{name}")
    class Static(View):
        """Dashboard assets: only the files of streams/static, loaded at start."""

        @guarded
        async def get(self, request: Request, name: str) -> Response:
            if name not in assets:
                raise ApiError(404, "not_found", f"no static file {name!r}")
            body, content_type = assets[name]
            return self.bytes(body, content_type=content_type)
