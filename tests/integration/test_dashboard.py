"""The dashboard in headless Chromium: fleet table, metric chart and a real anomaly marker.

Drives chromedriver's W3C WebDriver HTTP API with the standard library only. The screenshot is
saved to test-artifacts/dashboard.png.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import free_port
from tests.integration.conftest import simulate

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,900",
]


class WebDriver:
    """A minimal W3C WebDriver client over urllib."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session: str | None = None

    def call(self, method: str, path: str, payload: dict | None = None) -> object:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"WebDriver {method} {path}: {exc.read()[:500]!r}") from exc

    def start(self, user_data_dir: str) -> None:
        options = {"binary": CHROMIUM, "args": [*CHROME_FLAGS, f"--user-data-dir={user_data_dir}"]}
        caps = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
        value = self.call("POST", "/session", {"capabilities": caps})
        self.session = value["sessionId"]

    def s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def open(self, url: str) -> None:
        self.call("POST", self.s("/url"), {"url": url})

    def script(self, source: str) -> object:
        return self.call("POST", self.s("/execute/sync"), {"script": source, "args": []})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("GET", self.s("/screenshot"))))

    def quit(self) -> None:
        if self.session is not None:
            with contextlib.suppress(AssertionError, OSError):
                self.call("DELETE", self.s(""))


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            "headless Chromium not installed (needs /usr/bin/chromium and /usr/bin/chromedriver;"
            " `make test` installs them via scripts/system-deps.sh)"
        )
    port = free_port()
    driver_process = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    driver = WebDriver(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 20
    while True:
        try:
            if driver.call("GET", "/status").get("ready"):
                break
        except (OSError, AssertionError):
            pass
        if time.monotonic() > deadline:
            driver_process.kill()
            pytest.fail("chromedriver did not start")
        time.sleep(0.2)
    with tempfile.TemporaryDirectory(prefix="novacron-chromium-") as profile:
        try:
            driver.start(profile)
            yield driver
        finally:
            driver.quit()
            driver_process.terminate()
            try:
                driver_process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                driver_process.kill()


def wait_for(driver: WebDriver, source: str, timeout_s: float = 30.0) -> object:
    """Poll a JS expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout_s
    value: object = None
    while time.monotonic() < deadline:
        value = driver.script(f"return {source};")
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {source!r} (last value {value!r})")


CHART_STATE = """
const chart = document.getElementById("vm-chart");
const line = document.getElementById("metric-line");
return {
  vm: document.body.dataset.renderedVm || null,
  rows: document.querySelectorAll("#fleet-rows tr.vm-row").length,
  linePathLength: line ? line.getAttribute("d").length : 0,
  markers: [...chart.querySelectorAll(".anomaly-marker")].map(m => m.dataset.incident),
  spans: chart.querySelectorAll(".incident-span").length,
  band: document.getElementById("forecast-band") !== null,
  metric: chart.dataset.metric || null,
  lastTs: Number(chart.dataset.lastTs || 0),
  scoreLine: document.getElementById("score-line") !== null,
};
"""


def test_dashboard_draws_a_vm_chart_with_the_anomaly_marker(
    deployment, start_worker_process, browser
) -> None:
    worker = start_worker_process()
    vms, duration = 8, 400
    simulate(
        deployment,
        *("--vms", str(vms), "--duration", str(duration), "--fast"),
        *("--anomalies", "2", "--kinds", "cpu_spike", "--warmup", "250"),
        *("--anomaly-seconds", "30"),
    )
    worker.wait_samples(vms * duration, timeout_s=120)
    alerts = deployment.consume(
        "anomalies", until=lambda m: any(a["status"] == "open" for a in m), timeout_s=30
    )
    opened = sorted((a for a in alerts if a["status"] == "open"), key=lambda a: a["ts"])
    assert opened, "the injected cpu spikes raise at least one incident"
    # the latest incident lies within the recent samples the worker keeps for the chart
    vm_id = opened[-1]["vm_id"]
    emitted = {a["incident_id"] for a in alerts if a["vm_id"] == vm_id}
    vm = json.loads(urllib.request.urlopen(f"{worker.base_url}/vms/{vm_id}").read())
    assert vm["series"]["ts"][0] <= opened[-1]["ts"] <= vm["series"]["ts"][-1]

    browser.open(f"{worker.base_url}/#vm={vm_id}")
    wait_for(browser, f"document.body.dataset.renderedVm === {json.dumps(vm_id)}")
    deadline = time.monotonic() + 30
    state = browser.script(CHART_STATE)
    while opened[-1]["incident_id"] not in state["markers"] and time.monotonic() < deadline:
        time.sleep(0.25)
        state = browser.script(CHART_STATE)
    assert state["vm"] == vm_id
    assert state["rows"] == vms, "the fleet table lists every VM of the worker"
    assert state["linePathLength"] > 1000, "the metric line has the VM's recent samples"
    assert state["scoreLine"]
    assert opened[-1]["incident_id"] in state["markers"]
    assert set(state["markers"]) <= emitted, "markers are incidents the worker emitted"
    assert state["spans"] >= 1
    # The chart opens on the metric that drove the VM's latest incident, which may be one
    # without forecasts (disk rates are not forecast): show a forecast metric to see its band.
    forecast_metrics = sorted(vm["forecasts"])
    if forecast_metrics:
        if state["metric"] not in forecast_metrics:
            choice = json.dumps(forecast_metrics[0])
            browser.script(
                'const select = document.getElementById("metric-select");'
                f"select.value = {choice};"
                'select.dispatchEvent(new Event("change"));'
            )
            wait_for(browser, f"document.getElementById('vm-chart').dataset.metric === {choice}")
            state = browser.script(CHART_STATE)
        assert state["band"], f"a VM with a forecast of {state['metric']} shows its band"

    # scores keep the nines their severity depends on (bands at 99.99, 99.999 and 99.9999)
    shown = browser.script("return [99.98, 99.99912, 99.9999999, 100, 52.3456].map(fmtScore);")
    assert shown == ["99.98", "99.99912", "100", "100", "52.35"]
    panel = browser.script('return document.getElementById("incident").innerText;')
    score = re.search(r"score (\S+) / ", panel)
    vm = json.loads(urllib.request.urlopen(f"{worker.base_url}/vms/{vm_id}").read())
    raised = [a["score"] for a in vm["alerts"] if a["status"] != "resolved"]
    assert score and float(score[1]) in [
        float(f"{x:.7g}" if x >= 99 else f"{x:.4g}") for x in raised
    ]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:4] == b"\x89PNG"

    # live: new samples of the VM show up on the open page without a reload
    later = state["lastTs"] + 1.0
    deployment.produce(
        [
            (vm_id, json.dumps({"vm_id": vm_id, "ts": later + i, "cpu_pct": 30.0}).encode())
            for i in range(3)
        ]
    )
    wait_for(
        browser,
        f"Number(document.getElementById('vm-chart').dataset.lastTs) >= {later + 2}",
        timeout_s=30,
    )
