"""MetricBank's vectorised per-metric updates equal the scalar classes, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from models.classification import GrowthTracker
from models.drift import CompactPageHinkley
from models.metric_bank import MetricBank, batch_rounds, occurrence_groups
from models.normalizer import EWStandardizer
from models.residual import DampedTrendForecaster

M = 3  # metrics


class _ScalarVM:
    """The classes the bank replaces, one set per metric, driven as the engine drove them."""

    def __init__(self) -> None:
        self.scalers = [EWStandardizer() for _ in range(M)]
        self.forecasters = [DampedTrendForecaster() for _ in range(M)]
        self.drifts = [CompactPageHinkley() for _ in range(M)]
        self.growth = [GrowthTracker() for _ in range(M)]
        self.mean_z = [0.0] * M  # the shift channel's running means, as the engine kept them
        self.previous: list[float | None] = [None] * M  # each metric's last value

    def observe(self, x_row: list[float], warm: bool) -> tuple:
        z, r, t, shifted, shift = [0.0] * M, [0.0] * M, [0.0] * M, 0, 0.0
        rise, growth = [0.0] * M, [0.0] * M
        for i, x in enumerate(x_row):
            if x != x:
                continue
            before = self.previous[i]
            rise[i] = 0.0 if before is None else x - before
            self.previous[i] = x
            t[i] = self.scalers[i].mean if self.scalers[i].n else x
            z[i] = self.scalers[i].observe(x)
            r[i] = self.forecasters[i].observe(x)
            if warm and self.drifts[i].update(z[i]):
                shifted |= 1 << i
                self.scalers[i].reset_level(x)
                self.forecasters[i].reset_level(x)
            self.growth[i].learn_one(x)
            growth[i] = self.growth[i].index
            if warm:
                clipped = min(8.0, max(-8.0, z[i]))
                self.mean_z[i] += 0.2 * (clipped - self.mean_z[i])
                shift = max(shift, abs(self.mean_z[i]))
        return z, r, t, shifted, shift, rise, growth

    def state(self) -> list[float]:
        out: list[float] = []
        for parts in (self.scalers, self.forecasters, self.drifts, self.growth):
            for part in parts:
                out.extend(part.state())
        return out


@pytest.mark.parametrize(("batch", "n_vms"), [(1, 9), (5, 9), (64, 40), (200, 40)])
def test_bank_equals_the_scalar_classes_with_repeats_gaps_and_shifts(batch, n_vms, monkeypatch):
    """Small batches take the scalar path, large ones the vectorised rounds: both must agree."""
    rng = np.random.default_rng(batch)
    steps = 120 * n_vms
    rounds = []
    original = MetricBank._observe_round
    monkeypatch.setattr(
        MetricBank,
        "_observe_round",
        lambda self, rows, *a: rounds.append(len(rows)) or original(self, rows, *a),
    )
    bank = MetricBank(M, capacity=2)  # grows while VMs arrive
    slots = [bank.allocate() for _ in range(n_vms)]
    scalar = [_ScalarVM() for _ in range(n_vms)]
    seen = [0] * n_vms
    rows = []
    for step in range(steps):
        vm = int(rng.integers(n_vms))
        shift = 40.0 if step > steps * 0.6 and vm % 2 else 0.0  # odd VMs shift level
        x = rng.normal(50.0 + shift, 3.0, M)
        x[rng.random(M) < 0.15] = np.nan  # absent metrics
        if step % 97 == 0:
            x[:] = 1e4  # a spike on every metric
        rows.append((vm, x))
    shifts = 0
    for start in range(0, steps, batch):
        chunk = rows[start : start + batch]
        vms = [vm for vm, _ in chunk]
        X = np.array([x for _, x in chunk])
        warm = np.array([seen[vm] >= 30 for vm in vms])
        for vm in vms:
            seen[vm] += 1
        z, r, t, shifted, mean_z, rise, growth = bank.observe(
            np.array([slots[vm] for vm in vms]), X, warm
        )
        for j, (vm, x) in enumerate(chunk):
            ez, er, et, eshifted, emean_z, erise, egrowth = scalar[vm].observe(
                x.tolist(), bool(warm[j])
            )
            assert z[j].tolist() == ez and r[j].tolist() == er and t[j].tolist() == et
            assert rise[j].tolist() == erise and growth[j].tolist() == egrowth
            assert int(shifted[j]) == eshifted and float(mean_z[j]) == emean_z
            shifts += bool(eshifted)
    assert shifts > 0
    assert bool(rounds) == (batch >= 64)  # which path ran
    for vm in range(n_vms):
        assert bank.state(slots[vm]) == scalar[vm].state()
        assert bank.shift_state(slots[vm]) == scalar[vm].mean_z


def test_state_round_trips_and_released_slots_come_back_empty():
    bank = MetricBank(M)
    slot = bank.allocate()
    values = [float(i) for i in range(MetricBank.N_STATE_PER_METRIC * M)]
    bank.load_state(slot, values)
    bank.load_shift_state(slot, [0.5, -1.5, 2.5])
    assert bank.state(slot) == values and bank.shift_state(slot) == [0.5, -1.5, 2.5]
    bank.release(slot)
    again = bank.allocate()
    assert again == slot and bank.state(again) == [0.0] * len(values)
    assert bank.shift_state(again) == [0.0] * M


@pytest.mark.parametrize("size, distinct", [(1, 1), (7, 7), (50, 3), (400, 60)])
def test_batch_rounds_hold_each_slots_kth_row_in_row_order(size: int, distinct: int):
    slots = np.random.default_rng(size).integers(0, distinct, size)
    if distinct == size:
        slots = np.random.default_rng(size).permutation(size)
    rounds = batch_rounds(slots)
    assert [r.tolist() for r in rounds] == occurrence_groups(slots.tolist())
    assert all(len(np.unique(slots[r])) == len(r) for r in rounds)
