"""The product's own Prometheus metrics (Faust's sensor adds the consumer/producer ones)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("novacron_records_total", "Input records by outcome", ["outcome"])
SAMPLES = Counter("novacron_samples_total", "VM samples scored and learned")
DLQ = Counter("novacron_dlq_total", "Records or samples sent to the dead-letter topic", ["reason"])
ALERTS = Counter(
    "novacron_alerts_total", "Incident messages emitted", ["status", "severity", "kind"]
)
FEEDBACK = Counter("novacron_feedback_total", "Operator verdicts applied", ["verdict", "outcome"])
VMS_TRACKED = Gauge("novacron_vms_tracked", "VMs with model state on this worker")
MODEL_UPDATE_SECONDS = Histogram(
    "novacron_model_update_seconds",
    "Time to score and learn the samples of one record, per sample",
    buckets=(1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 5e-3),
)
