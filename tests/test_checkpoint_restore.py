"""A VM restored from its checkpoint on a fresh worker carries on like an uninterrupted run.

Goes through the processor's own checkpoint path (take_checkpoints -> Checkpoint -> restore), as a
worker taking a partition over does. The fleet-level forests are not in a VM's checkpoint, so
raw scores differ somewhat; the incidents must not.
"""

from __future__ import annotations

import json
import statistics

from models.engine import AnomalyEngine, EngineConfig
from streams.capacity import CapacityConfig, CapacityPlanner
from streams.processor import Checkpoint, MetricsProcessor, Source
from streams.simulator import Fleet
from streams.windows import TumblingWindows

START = 1_790_000_000.0


def _engine() -> AnomalyEngine:
    """The fleet below samples every second: the base bar per sample, as the tests were
    written with (not one 300 times rarer for that cadence)."""
    return AnomalyEngine(EngineConfig(threshold_interval=0))


def _records() -> list[bytes]:
    fleet = Fleet(20, seed=3, day_seconds=600)
    fleet.inject(5, "cpu_spike", 330, 10)
    return [
        json.dumps(value).encode()
        for _, records in fleet.records(400, START, 1.0, batch=True)
        for _, value in records
    ]


def _run(processor: MetricsProcessor, records: list[bytes], first_offset: int) -> list:
    outputs, scores = [], {}
    for i, raw in enumerate(records):
        outputs += processor.process(raw, Source("vm.metrics", 0, first_offset + i, b"h"))
        for sample in json.loads(raw)["samples"]:
            snapshot = processor.engine.vm_snapshot(sample["vm_id"])
            scores[(sample["vm_id"], snapshot["last_ts"])] = snapshot["last_score"]
    incidents = [
        (o.value["vm_id"], o.value["status"], o.value["severity"], o.value["ts"])
        for o in outputs
        if o.topic_id == "anomalies"
    ]
    return incidents, scores


def test_restored_vms_raise_the_same_incidents_as_an_uninterrupted_run() -> None:
    records = _records()
    cut = len(records) * 3 // 4  # the spike comes after the crash point
    uninterrupted = MetricsProcessor(engine=_engine(), checkpoint_every=1)
    _run(uninterrupted, records[:cut], 0)
    store = uninterrupted.take_checkpoints(force=True)
    assert len(store) == 20
    expected, expected_scores = _run(uninterrupted, records[cut:], cut)

    restored = MetricsProcessor(engine=_engine(), restore=store.get)
    incidents, scores = _run(restored, records[cut:], cut)
    assert restored.stats.records["vm_restored"] == 20
    spike = [i for i in expected if i[0] == "vm-00005"]
    assert spike and spike[0][1] == "open" and spike[0][2] in ("high", "critical")
    assert [i for i in incidents if i[0] == "vm-00005"] == spike

    fresh = MetricsProcessor(engine=_engine())
    fresh_incidents, fresh_scores = _run(fresh, records[cut:], cut)
    assert [i for i in fresh_incidents if i[0] == "vm-00005"] != spike, (
        "without the checkpoint a fresh worker is still warming up"
    )
    gap = statistics.median(abs(scores[k] - expected_scores[k]) for k in expected_scores)
    fresh_gap = statistics.median(
        abs(fresh_scores[k] - expected_scores[k]) for k in expected_scores
    )
    assert gap < 0.5 * fresh_gap, (gap, fresh_gap)


def test_redelivered_records_the_checkpoint_already_learned_are_skipped() -> None:
    """A takeover resumes from the committed offset, which can lie behind the checkpoint."""
    records = _records()
    cut, overlap = len(records) * 3 // 4, 40
    uninterrupted = MetricsProcessor(engine=_engine(), checkpoint_every=1)
    _run(uninterrupted, records[:cut], 0)
    taken = uninterrupted.take_checkpoints()
    store = {vm: Checkpoint.decode(c.encode()) for vm, c in taken.items()}
    last_record_of = {
        sample["vm_id"]: offset
        for offset, raw in enumerate(records[:cut])
        for sample in json.loads(raw)["samples"]
    }
    assert {vm: (c.partition, c.offset) for vm, c in store.items()} == {
        vm: (0, offset) for vm, offset in last_record_of.items()
    }
    expected, _ = _run(uninterrupted, records[cut:], cut)

    restored = MetricsProcessor(engine=_engine(), restore=store.get)
    incidents, _ = _run(restored, records[cut - overlap :], cut - overlap)
    per_record = len(json.loads(records[0])["samples"])
    assert restored.stats.records["replayed_sample"] == overlap * per_record
    assert restored.stats.samples == (len(records) - cut) * per_record
    spike = [i for i in expected if i[0] == "vm-00005"]
    assert [i for i in incidents if i[0] == "vm-00005"] == spike


def test_checkpoints_written_before_they_carried_an_offset_still_restore() -> None:
    records = _records()
    first = MetricsProcessor(engine=_engine(), checkpoint_every=1)
    _run(first, records[:50], 0)
    legacy = {vm: c.encode()["state"] for vm, c in first.take_checkpoints().items()}
    restored = MetricsProcessor(
        engine=_engine(), restore=lambda vm: Checkpoint.decode(legacy.get(vm))
    )
    _run(restored, records[40:60], 40)  # no offset to compare: every sample is learned
    assert restored.stats.records["vm_restored"] == 20
    assert restored.stats.records["replayed_sample"] == 0
    assert restored.stats.samples == 20 * len(json.loads(records[0])["samples"])


def test_a_fleet_in_lock_step_checkpoints_a_share_of_its_vms_every_tick() -> None:
    vms, every = 200, 20
    fleet = Fleet(vms, seed=4, vms_per_host=50, day_seconds=600)
    processor = MetricsProcessor(engine=_engine(), checkpoint_every=every)
    per_tick: list[list[str]] = []
    offset = 0
    for _, records in fleet.records(3 * every, START, 1.0, batch=True):
        for _, value in records:
            processor.process(json.dumps(value).encode(), Source("vm.metrics", 0, offset, b"h"))
            offset += 1
        per_tick.append(sorted(processor.take_checkpoints()))
    # every VM once per `every` ticks, its first time at a phase of its own ...
    for start in (every, 2 * every):
        block = [vm for tick in per_tick[start : start + every] for vm in tick]
        assert sorted(block) == sorted(fleet.vm_ids)
    # ... so that no tick carries the whole fleet's checkpoints
    assert max(map(len, per_tick)) <= 3 * vms // every
    assert sum(map(len, per_tick[:every])) == vms


def test_a_verdict_is_checkpointed_with_the_vms_next_batch() -> None:
    """Feedback is committed with its record: a crash must not forget it."""
    records = _records()
    processor = MetricsProcessor(engine=_engine(), checkpoint_every=100_000)
    opened = []
    for i, raw in enumerate(records):
        outputs = processor.process(raw, Source("vm.metrics", 0, i, b"h"))
        opened += [o.value for o in outputs if o.topic_id == "anomalies"]
        if any(a["vm_id"] == "vm-00005" and a["status"] == "open" for a in opened):
            break
    incident = next(a["incident_id"] for a in opened if a["vm_id"] == "vm-00005")
    assert processor.take_checkpoints() == {}  # far from any regular checkpoint
    verdict = json.dumps({"incident_id": incident, "verdict": "false_positive"}).encode()
    assert processor.feedback(verdict, Source("vm.feedback", 0, 0, b"h")) == []

    # a batch of another partition cannot write it: it stays due
    assert processor.take_checkpoints(partitions={1}) == {}
    taken = processor.take_checkpoints(partitions={0})
    assert list(taken) == ["vm-00005"]

    def penalties(engine: AnomalyEngine) -> list[float]:
        return list(engine._vms["vm-00005"].threshold.penalty)

    restored = _engine()
    restored.load_vm("vm-00005", taken["vm-00005"].state)
    assert penalties(restored) == penalties(processor.engine)
    assert max(penalties(restored)) > 0, "the false positive raised the VM's threshold"


def test_a_verdict_on_a_restored_vm_that_has_only_seen_replays_is_checkpointed() -> None:
    records = _records()
    cut = len(records) * 3 // 4
    first = MetricsProcessor(engine=_engine(), checkpoint_every=1)
    outputs = []
    for i, raw in enumerate(records[:cut]):
        outputs += first.process(raw, Source("vm.metrics", 0, i, b"h"))
    store = first.take_checkpoints()
    incident = next(o.value["incident_id"] for o in outputs if o.topic_id == "anomalies")
    vm_id = incident.rpartition(":")[0]

    restored = MetricsProcessor(engine=_engine(), restore=store.get)
    _run(restored, records[cut - 10 : cut], cut - 10)  # all redelivered: nothing learned
    assert restored.stats.samples == 0
    verdict = json.dumps({"incident_id": incident, "verdict": "confirmed"}).encode()
    restored.feedback(verdict, Source("vm.feedback", 0, 0, b"h"))
    taken = restored.take_checkpoints(partitions={0})
    assert taken[vm_id].offset == store[vm_id].offset


def _forecasting(**kwargs) -> MetricsProcessor:
    return MetricsProcessor(
        engine=_engine(),
        planner=CapacityPlanner(CapacityConfig(min_windows=3, act_after_windows=5)),
        forecast_windows=TumblingWindows(10.0),
        **kwargs,
    )


def _published(processor: MetricsProcessor, records: list[bytes], first_offset: int) -> list:
    outputs = []
    for i, raw in enumerate(records):
        outputs += processor.process(raw, Source("vm.metrics", 0, first_offset + i, b"h"))
    return [(o.topic_id, o.value) for o in outputs if o.topic_id in ("forecasts", "actions")]


def test_restored_forecasting_state_carries_on_like_an_uninterrupted_run() -> None:
    """Forecasters, usage history and scaling cooldowns move with the VM; the windows the
    state reflects are skipped when their records are redelivered."""
    records = _records()
    # five host records per tick: the overlap spans the window open at the cut, and more
    cut, overlap = len(records) // 2, 5 * 25
    uninterrupted = _forecasting(forecast_checkpoint_every=1)
    _published(uninterrupted, records[:cut], 0)
    store = uninterrupted.take_forecast_checkpoints()
    assert len(store) == 20
    expected = _published(uninterrupted, records[cut:], cut)
    assert {topic for topic, _ in expected} == {"forecasts", "actions"}

    restored = _forecasting(restore=None, restore_forecasts=store.get)
    got = _published(restored, records[cut - overlap :], cut - overlap)
    assert restored.stats.records["vm_forecasts_restored"] == 20
    assert got == expected

    fresh = _published(_forecasting(), records[cut - overlap :], cut - overlap)
    assert fresh != expected, "without the state a fresh worker starts its forecasters over"


def test_forecasting_state_that_does_not_fit_is_skipped_and_counted() -> None:
    records = _records()
    first = _forecasting(forecast_checkpoint_every=1)
    _published(first, records[:100], 0)
    store = first.take_forecast_checkpoints()
    other = MetricsProcessor(
        engine=_engine(),
        planner=CapacityPlanner(CapacityConfig(horizon=6, min_windows=3)),
        forecast_windows=TumblingWindows(10.0),
        restore_forecasts=store.get,
    )
    outputs = _published(other, records[100:400], 100)
    assert other.stats.records["vm_forecasts_not_restored"] == 20
    assert outputs and all(
        len(value["points"]) == 6 for topic, value in outputs if topic == "forecasts"
    )
