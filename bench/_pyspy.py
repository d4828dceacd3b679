"""Summaries of py-spy's raw (collapsed-stack) output: where a worker's time goes."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_IDLE_FUNCS = ("select", "poll", "epoll", "_run_once", "wait")
_OURS = ("models/", "streams/", "bench/")
_INCLUSIVE = {
    "models/ (anomaly engine)": "models/",
    "streams/processor.py (whole call)": "streams/processor.py",
    "streams/validation.py": "streams/validation.py",
    "aiokafka": "aiokafka/",
    "river": "river/",
    "json": "json/",
    "prometheus": "prometheus_client/",
}


def _relative(file: str) -> str:
    """A frame's file as a path from its package root (py-spy shortens some, not all)."""
    f = file.replace("\\", "/")
    for marker in ("site-packages/", "dist-packages/"):
        if marker in f:
            return f.split(marker, 1)[1]
    for ours in _OURS:
        if f"/{ours}" in f:
            return ours + f.rsplit(f"/{ours}", 1)[1]
    if "/lib/python3" in f:
        return f.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return f


def _component(file: str) -> str:
    """Our own code by file; libraries and the standard library by top-level package."""
    rel = _relative(file)
    if rel.startswith(_OURS):
        return rel
    return rel.split("/", 1)[0] if "/" in rel else rel or "?"


def _file_of(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    return (match["func"], _relative(match["file"])) if match else (frame, "")


def summarize(path: str | Path, top: int = 15) -> dict:
    """Self-time shares by component and function, inclusive shares, idle share."""
    self_by_component: Counter = Counter()
    self_by_function: Counter = Counter()
    inclusive: Counter = Counter()
    total = idle = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        files = [_file_of(frame)[1] for frame in frames]
        func, file = _file_of(frames[-1])
        if file.startswith("selectors") or (file.startswith("asyncio") and func in _IDLE_FUNCS):
            idle += count
            continue
        self_by_component[_component(file)] += count
        self_by_function[f"{func} ({_component(file)})"] += count
        for name, prefix in _INCLUSIVE.items():
            if any(f.startswith(prefix) for f in files):
                inclusive[name] += count
    busy = max(total - idle, 1)
    return {
        "samples": total,
        "idle_share": round(idle / max(total, 1), 4),
        "busy_self_share_by_component": {
            k: round(v / busy, 4) for k, v in self_by_component.most_common(top)
        },
        "busy_self_share_by_function": {
            k: round(v / busy, 4) for k, v in self_by_function.most_common(top)
        },
        "busy_inclusive_share": {k: round(v / busy, 4) for k, v in inclusive.most_common()},
        # Everything the worker does besides MetricsProcessor.process: Faust's stream and
        # consumer machinery, aiokafka, the event loop, sending outputs, web views.
        "busy_outside_processor_share": round(
            1.0 - inclusive["streams/processor.py (whole call)"] / busy, 4
        ),
    }
