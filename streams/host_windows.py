"""Per-host window aggregates built from the closed windows of the host's VMs.

A host window keeps each VM's means by vm_id, so a VM window that is closed again after an
at-least-once redelivery replaces its contribution instead of adding it twice.
"""

from __future__ import annotations

from collections.abc import Sequence

from streams.windows import ClosedWindow


def merge_into_host(current: dict | None, windows: Sequence[ClosedWindow]) -> dict:
    """The host window `current` with the VM means of `windows` (closed windows of VMs of
    that host, of the same size and start) put in, in order (a new dict)."""
    vms = dict(current["vms"]) if current else {}
    for window in windows:
        vms[window.vm_id] = {name: s.mean for name, s in window.metrics.items() if s.count}
    totals: dict[str, float] = {}
    for means in vms.values():
        for name, mean in means.items():
            totals[name] = totals.get(name, 0.0) + mean
    last = windows[-1]
    return {
        "host": last.host,
        "size_s": last.size_s,
        "start": last.start,
        "end": last.end,
        "vm_count": len(vms),
        "totals": totals,
        "vms": vms,
    }
