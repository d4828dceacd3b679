"""The worker's web views: health, readiness and live stats (Prometheus is at /metrics)."""

from __future__ import annotations

import time

import faust
from faust.web import Request, Response, View

from streams.processor import MetricsProcessor


def register_views(
    app: faust.App, processor: MetricsProcessor, readiness: dict, started_at: float
) -> None:
    """Attach every view to `app`."""

    @app.page("/health")
    class Health(View):
        """Liveness: the worker's event loop answers."""

        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "uptime_s": round(time.time() - started_at, 3)})

    @app.page("/ready")
    class Ready(View):
        """Readiness: partitions assigned after the first rebalance."""

        async def get(self, request: Request) -> Response:
            ready = readiness["assigned"] and not app.rebalancing
            return self.json({"ready": ready}, status=200 if ready else 503)

    @app.page("/stats")
    class Stats(View):
        """Live counters of this worker."""

        async def get(self, request: Request) -> Response:
            s = processor.stats
            return self.json(
                {
                    "uptime_s": round(time.time() - started_at, 3),
                    "records": dict(s.records),
                    "samples": s.samples,
                    "dlq": dict(s.dlq),
                    "alerts": [
                        {"status": k[0], "severity": k[1], "count": v}
                        for k, v in sorted(s.alerts.items())
                    ],
                    "vms_tracked": processor.engine.tracked_vms(),
                    "last_sample_ts": s.last_sample_ts,
                }
            )
