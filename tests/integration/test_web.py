"""The worker's JSON views, Prometheus text and feedback endpoint against a real worker."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from kafka import KafkaConsumer

from tests.integration.conftest import simulate

TOKEN = "test-token-123"
VMS, DURATION = 8, 400


def call(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict, str]:
    """(status, headers, body text) of one request; 4xx/5xx are answers, not exceptions."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def get_json(url: str) -> tuple[int, dict]:
    status, _, text = call(url)
    return status, json.loads(text)


def assert_error(status: int, text: str, expected_status: int, code: str) -> dict:
    assert status == expected_status, text
    doc = json.loads(text)
    assert doc["error"] == code and doc["detail"], doc
    assert "Traceback" not in text
    return doc


def wait_caught_up(base: str, samples: int, timeout_s: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout_s
    stats: dict = {}
    while time.monotonic() < deadline:
        stats = get_json(f"{base}/stats")[1]
        if stats["samples"] >= samples and stats["consumer_lag"]["total"] == 0:
            return stats
        time.sleep(0.5)
    raise AssertionError(f"worker did not catch up: {stats}")


def metrics(base: str) -> str:
    return call(f"{base}/metrics")[2]


def sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    """Value of the Prometheus sample `name` whose labels include `labels`, if present."""
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if not head.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


def feedback_messages(deployment, n: int, timeout_s: float = 20.0) -> list:
    consumer = KafkaConsumer(
        deployment.topics["feedback"].name,
        bootstrap_servers=deployment.broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
        enable_auto_commit=False,
    )
    got: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < n and time.monotonic() < deadline:
            got.extend(consumer)
    finally:
        consumer.close()
    return got


def test_views_report_what_the_worker_processed(deployment, start_worker_process) -> None:
    worker = start_worker_process(
        extra_env={"NOVACRON_FEEDBACK_TOKEN": TOKEN, "NOVACRON_FORECAST_TOP_N": "3"}
    )
    base = worker.base_url
    simulate(
        deployment,
        *("--vms", str(VMS), "--duration", str(DURATION), "--fast", "--seed", "0"),
        *("--anomalies", "2", "--kinds", "cpu_spike", "--warmup", "250"),
        *("--anomaly-seconds", "30"),
    )
    samples = VMS * DURATION
    stats = wait_caught_up(base, samples)

    status, health = get_json(f"{base}/health")
    assert status == 200 and health["status"] == "ok"
    status, ready = get_json(f"{base}/ready")
    assert status == 200 and ready["ready"] and ready["assigned"]

    # /stats: counts match what was published; lag rows cover the input partitions
    assert stats["samples"] == samples and stats["records"]["processed"] == samples
    assert stats["vms_tracked"] == VMS
    partitions = stats["consumer_lag"]["partitions"]
    metrics_rows = [p for p in partitions if p["topic"] == deployment.topics["metrics"].name]
    assert len(metrics_rows) == deployment.topics["metrics"].partitions
    assert sum(p["highwater"] for p in metrics_rows) == samples
    assert all(p["lag"] == 0 for p in partitions)
    assert stats["model_state_bytes"]["per_vm_mean"] > 0
    assert set(stats["rates"]) >= {"records", "samples"}
    # the worker's collector: what was imported at start is frozen out of full collections
    gc_stats = stats["gc"]
    assert gc_stats["frozen_objects"] > 10_000 and gc_stats["young_threshold"] == 50_000
    assert len(gc_stats["collections"]) == len(gc_stats["longest_pause_s"]) == 3
    assert stats["event_loop"] == "uvloop"  # the default NOVACRON_EVENT_LOOP

    # /vms: paging and ordering
    status, page = get_json(f"{base}/vms?limit=3")
    assert status == 200 and page["total"] == VMS and len(page["vms"]) == 3
    status, everything = get_json(f"{base}/vms?limit=100")
    scores = [v["score"] for v in everything["vms"]]
    assert scores == sorted(scores, reverse=True)
    assert [v["vm_id"] for v in everything["vms"][:3]] == [v["vm_id"] for v in page["vms"]]
    status, by_id = get_json(f"{base}/vms?sort=vm_id&offset=2&limit=2")
    assert [v["vm_id"] for v in by_id["vms"]] == ["vm-00002", "vm-00003"]
    for query, name in (("limit=0", "limit"), ("sort=size", "sort"), ("offset=-1", "offset")):
        status, _, text = call(f"{base}/vms?{query}")
        assert name in assert_error(status, text, 400, "bad_parameter")["detail"]

    # /vms/{vm_id}: recent series, model info; unknown VM is a JSON 404
    status, vm = get_json(f"{base}/vms/vm-00001")
    assert status == 200 and vm["vm_id"] == "vm-00001"
    series = vm["series"]
    assert len(series["ts"]) == 240 and series["ts"] == sorted(series["ts"])
    assert all(v is not None for v in series["cpu_pct"])
    assert vm["model"]["known"] and vm["model"]["samples"] == DURATION
    status, _, text = call(f"{base}/vms/vm-99999")
    assert "vm-99999" in assert_error(status, text, 404, "unknown_vm")["detail"]

    # /alerts: the worker's incidents, filterable
    status, alerts = get_json(f"{base}/alerts")
    assert status == 200 and alerts["count"] > 0, "the injected cpu spikes raise incidents"
    opened = [a for a in alerts["alerts"] if a["status"] == "open"]
    assert opened
    severity = opened[0]["severity"]
    status, filtered = get_json(f"{base}/alerts?severity={severity}&status=open")
    assert filtered["count"] > 0
    assert all(a["severity"] == severity and a["status"] == "open" for a in filtered["alerts"])
    vm_id = opened[0]["vm_id"]
    status, of_vm = get_json(f"{base}/alerts?vm_id={vm_id}")
    assert of_vm["count"] > 0 and {a["vm_id"] for a in of_vm["alerts"]} == {vm_id}
    status, _, text = call(f"{base}/alerts?severity=urgent")
    assert_error(status, text, 400, "bad_parameter")
    counted = stats["alerts"]
    assert counted["messages_by_status"]["open"] == len(opened)
    assert sum(counted["opened_by_severity"].values()) == len(opened)
    assert sum(counted["opened_by_kind"].values()) == len(opened)

    # /metrics: Faust's sensor and ours in one exposition
    status, _, text = call(f"{base}/metrics")
    assert status == 200
    assert sample(text, "novacron_records_total", {"outcome": "processed"}) == samples
    metrics_topic = deployment.topics["metrics"].name  # Faust's per-record series, on scrape
    assert sample(text, "faust_messages_received_per_topic_total", {"topic": metrics_topic}) == (
        samples
    )
    assert "faust_events_runtime_ms_bucket" in text and "faust_total_events_per_stream" in text
    assert "novacron_model_update_seconds_bucket" in text
    for generation in range(3):  # timed since start (a steady worker may not have needed any)
        timed = sample(text, "novacron_gc_pause_seconds_count", {"generation": str(generation)})
        assert timed is not None and timed <= gc_stats["collections"][generation] + 5
    assert f"novacron_vms_tracked {float(VMS)}" in text
    assert "novacron_alerts_open" in text and "novacron_alerts_total{" in text
    published = sample(text, "novacron_published_total", {"topic": "anomalies"})
    assert published == sum(counted["messages_by_status"].values()), "outputs are counted"
    if stats["forecasts"]:  # per-VM forecast gauges only for the top-N VMs
        yhat_vms = {
            line.split('vm_id="')[1].split('"')[0]
            for line in text.splitlines()
            if line.startswith("novacron_forecast_yhat")
        }
        assert 0 < len(yhat_vms) <= 3

    # POST /feedback
    url = f"{base}/feedback"
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    incident = opened[0]
    good = json.dumps({"incident_id": incident["incident_id"], "verdict": "false_positive"})
    status, headers, text = call(url, "POST", good.encode())
    assert_error(status, text, 401, "unauthorized")
    assert headers.get("WWW-Authenticate") == "Bearer"
    status, _, text = call(url, "POST", good.encode(), {"Authorization": "Bearer wrong"})
    assert_error(status, text, 401, "unauthorized")
    status, _, text = call(url, "POST", b'{"pad": "' + b"x" * 20_000 + b'"}', auth)
    assert_error(status, text, 413, "body_too_large")
    status, _, text = call(url, "POST", b"{not json", auth)
    assert_error(status, text, 400, "not_json")
    bad_verdict = {"incident_id": incident["incident_id"], "verdict": "maybe"}
    status, _, text = call(url, "POST", json.dumps(bad_verdict).encode(), auth)
    assert "verdict" in assert_error(status, text, 400, "bad_field")["detail"]
    unknown = {"incident_id": "vm-x:123", "verdict": "confirmed"}
    status, _, text = call(url, "POST", json.dumps(unknown).encode(), auth)
    assert_error(status, text, 404, "unknown_incident")

    status, _, text = call(url, "POST", good.encode(), auth)
    assert status == 202, text
    accepted = json.loads(text)
    assert accepted["key"] == incident["routing_key"] and accepted["vm_id"] == incident["vm_id"]
    (message,) = feedback_messages(deployment, 1)
    assert message.key.decode() == incident["routing_key"]
    verdict = json.loads(message.value)
    assert verdict["incident_id"] == incident["incident_id"]
    assert verdict["verdict"] == "false_positive" and verdict["vm_id"] == incident["vm_id"]

    # the worker that owns the VM consumed it through the feedback agent and applied it
    deadline = time.monotonic() + 30
    labels = {"verdict": "false_positive", "outcome": "applied"}
    while (
        time.monotonic() < deadline
        and sample(metrics(base), "novacron_feedback_total", labels) is None
    ):
        time.sleep(0.5)
    assert sample(metrics(base), "novacron_feedback_total", labels) == 1.0


def test_feedback_is_disabled_without_a_token(deployment, start_worker_process) -> None:
    worker = start_worker_process()
    body = json.dumps({"incident_id": "vm-1:1", "verdict": "confirmed"}).encode()
    status, _, text = call(
        f"{worker.base_url}/feedback", "POST", body, {"Authorization": "Bearer anything"}
    )
    assert (
        "NOVACRON_FEEDBACK_TOKEN" in assert_error(status, text, 403, "feedback_disabled")["detail"]
    )
    status, _, text = call(f"{worker.base_url}/feedback")
    assert status == 405
    status, headers, text = call(f"{worker.base_url}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert 'id="vm-chart"' in text and "/static/dashboard.js" in text
    for name in ("dashboard.js", "dashboard.css"):
        status, _, text = call(f"{worker.base_url}/static/{name}")
        assert status == 200 and text
    status, _, text = call(f"{worker.base_url}/static/..%2Fweb.py")
    assert status == 404 and "import" not in text


def test_any_worker_answers_for_any_vm(deployment, start_worker_process) -> None:
    first = start_worker_process("a")
    second = start_worker_process("b")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # both in the group, each with its share of partitions
        lags = [w.stats()["consumer_lag"]["partitions"] for w in (first, second)]
        if all(lags) and sum(len(p) for p in lags) == 2 * 8:
            break
        time.sleep(0.5)
    vms, duration = 12, 60
    simulate(deployment, "--vms", str(vms), "--duration", str(duration), "--fast")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if sum(w.stats()["samples"] for w in (first, second)) >= vms * duration:
            break
        time.sleep(0.5)
    held = {w.base_url: get_json(f"{w.base_url}/vms?limit=100")[1] for w in (first, second)}
    owner = {v["vm_id"]: url for url, page in held.items() for v in page["vms"]}
    assert len(owner) == vms and all(page["total"] < vms for page in held.values()), (
        "both workers hold part of the fleet"
    )
    for worker in (first, second):
        for vm_id, url in owner.items():
            status, headers, text = call(f"{worker.base_url}/vms/{vm_id}")
            assert status == 200, text
            vm = json.loads(text)
            assert vm["vm_id"] == vm_id and len(vm["series"]["ts"]) == duration
            if url != worker.base_url:
                assert headers["X-Novacron-Answered-By"] == url
    status, _, text = call(f"{first.base_url}/vms/vm-not-here")
    assert_error(status, text, 404, "unknown_vm")
