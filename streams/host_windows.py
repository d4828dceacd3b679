"""Per-host window aggregates built from the closed windows of the host's VMs.

A host window keeps each VM's means by vm_id, so a VM window that is closed again after an
at-least-once redelivery replaces its contribution instead of adding it twice.
"""

from __future__ import annotations

from streams.windows import ClosedWindow


def merge_into_host(current: dict | None, window: ClosedWindow) -> dict:
    """The host window `current` with `window`'s VM means put in (a new dict)."""
    vms = dict(current["vms"]) if current else {}
    vms[window.vm_id] = {name: s.mean for name, s in window.metrics.items() if s.count}
    totals: dict[str, float] = {}
    for means in vms.values():
        for name, mean in means.items():
            totals[name] = totals.get(name, 0.0) + mean
    return {
        "host": window.host,
        "size_s": window.size_s,
        "start": window.start,
        "end": window.end,
        "vm_count": len(vms),
        "totals": totals,
        "vms": vms,
    }
