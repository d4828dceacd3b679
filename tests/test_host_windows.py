"""Host windows sum their VMs' window means, idempotently."""

from __future__ import annotations

from streams.host_windows import merge_into_host
from streams.windows import ClosedWindow, WindowStats


def vm_window(vm: str, cpu: float) -> ClosedWindow:
    return ClosedWindow(
        vm,
        "h1",
        60.0,
        120.0,
        {"cpu_pct": WindowStats(2, 2 * cpu, cpu), "mem_pct": WindowStats(0, 0.0, 0.0)},
    )


def test_host_totals_sum_vm_means_and_redelivery_does_not_double_count() -> None:
    host = merge_into_host(None, [vm_window("a", 10.0)])
    host = merge_into_host(host, [vm_window("b", 30.0)])
    assert host["vm_count"] == 2 and host["totals"] == {"cpu_pct": 40.0}
    assert (host["host"], host["start"], host["end"]) == ("h1", 120.0, 180.0)
    again = merge_into_host(host, [vm_window("b", 30.0)])
    assert again == host, "the same VM window closed twice counts once"
    assert merge_into_host(host, [vm_window("b", 50.0)])["totals"] == {"cpu_pct": 60.0}
    assert host["vms"]["a"] == {"cpu_pct": 10.0}, "metrics without samples are left out"


def test_windows_merged_together_equal_windows_merged_one_by_one() -> None:
    windows = [vm_window("a", 10.0), vm_window("b", 30.0), vm_window("a", 20.0)]
    one_by_one = None
    for window in windows:
        one_by_one = merge_into_host(one_by_one, [window])
    assert merge_into_host(None, windows) == one_by_one
    assert one_by_one["totals"] == {"cpu_pct": 50.0}, "a VM closed twice counts its latest"
