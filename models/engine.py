"""The anomaly engine the stream worker calls: score and learn VM samples, emit incident events.

Cost split (why the state is where it is)
-----------------------------------------
A worker holds 100k VMs in under 2 GB (<= 16 KB each) and updates the whole ensemble in well
under 100 µs per sample. A River HalfSpaceTrees is ~1 MB of heap and ~46 ms to build, so no
forest can be per VM: everything kept *per VM* is a few scalars and small arrays, and
everything big is *shared by the fleet*.

Per VM (~7 KB resident at 100k VMs, ~5.9 KB serialised by `dump_vm` for six metrics,
restored in tens of µs by `load_vm`):

- per metric: a robust EW standardiser (typical value and spread; `normalizer`), a one-step
  damped-trend forecaster with a residual scale (`residual`), a two-sided Page-Hinkley on the
  z-score (`drift`, 2 floats where River's PageHinkley is ~880 B) and a growth index
  (`classification`): 13 floats, and the running mean of the clipped z-score for the `shift`
  channel, kept for all VMs in one `metric_bank.MetricBank` (a row per VM) so that a batch
  updates them with numpy operations;
- per metric, a time-of-day profile (`daily_profile.DailyProfiles`, 24 hourly bins of 3
  floats and 5 more): what the metric usually reads at this hour, for the `daily` channel;
- per detector channel, plus one for their combination: a `TailCalibrator` (`calibration`,
  a decayed 64-bin histogram of past raw scores with a fitted exponential tail) turning raw
  scores into tail probabilities, so that 99.9 means "one in a thousand" on every VM and
  detector; kept for all VMs in one `calibration_bank.CalibrationBank`, which calibrates a
  batch's scores with numpy operations;
- an `AdaptiveThreshold` (`threshold`: kind penalties from operator feedback, alert rate) and
  an `IncidentTracker` (`incidents`: lifecycle, ids and kinds of the last incidents);
- its sampling interval (one float in an array by slot, `threshold.next_interval`): a VM
  sampled more often than every `threshold_interval` seconds needs a rarer surprise to alert;
- a row of `recurrence.DailyRecurrenceBank` (72 bytes and a day number): per hour of the day, the
  largest surprise of the last two days, so a daily job's spike stops alerting once it has
  recurred twice;
- a `RecentPeaks` (`peaks`, 6 floats): the peak surprise of each of the last two surprising
  episodes, so the same surprise a third time within a day, on any rhythm, is not news.
- per metric, the highest and lowest value seen, relaxing slowly toward later values
  (`value_range.RangeBank`, 2 float32s), for the `range` channel.

Shared by the fleet (`fleet.FleetForests`): River HalfSpaceTrees and, when the module exists,
the incremental Isolation Forest, over per-VM z-scores. Standardisation makes every VM's
normal behaviour look alike, so one forest learns what normal *joint* behaviour is (which
metrics move together) for all VMs, for ~1 MB in total. The forests only score and learn
samples with at least `forest_min_features` metrics: for one metric the level channel already
says what a density over one z-score could (on NAB's single-metric series the Isolation Forest
only added seed-dependent noise).

Per batch
---------
1. VM-local pass, vectorised over the batch (in order per VM): z-scores and forecast
   residuals against the state *before* each sample, drift check (a confirmed shift
   re-centres the metric), then learn the sample.
2. Fleet pass, vectorised over the batch: forests score all rows, then learn them (the
   Isolation Forest learns a small batch with the next ones, in chunks of 32 rows or more).
3. Calibration, vectorised over the batch (in order per VM): each channel's raw score ->
   p-value (then learned); the largest channel surprise (-ln p) but the range and shape
   channels', less what recurred at this time of day on both previous days (above
   `recurrence_floor`), is calibrated once more (uniform on a stationary stream whatever the
   channels' correlation; a surprise rarer than `combined_winsor` is learned as one of that
   rarity).
   Discounting before that calibration keeps a daily job's spikes out of the VM's idea of
   how big unexplained surprises get. The final p-value is the smaller of that and
   `range_factor` times the smaller of the range and shape channels' p-values: a record (or a
   pattern unlike any recent one) stays as rare as its channel calibrated it, however often
   the VM's routine spikes surprise the other channels.
4. VM-local pass, in order: the final p-value minus, when no bigger, what both of the last
   two episodes of the day peaked at (above `recurrence_floor`); score = 100 * (1 - p); then
   attribution, kind, threshold, severity and the incident lifecycle. Inside an open incident
   only news (the opening sample, an escalation) keeps its score; the other samples are capped
   below the threshold (`incident_dedup`), so the score column reads one detection per
   incident, as the events do.

Channels: `residual` (largest forecast residual over metrics, in residual scales), `level`
(largest |z|: distance from typical), `shift` (largest short EW mean of signed z, in units of
its noise: a moderate move that lasts), `daily` (largest distance from what the metric reads at
this hour, counted only for metrics whose profile explains their swings), `range` (largest
excess over the widest range the metric has shown in weeks, in units of that range: remembers
what the standardiser and calibrators forget, so the biggest spike of a spiky VM's life is
news), `shape` (how far the metric's latest stretch of values is from any earlier stretch in
its last `shape_history` values, in units of its range: a change of pattern made of ordinary
values), `halfspace` and `iforest` (fleet forests).
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain, compress
from operator import itemgetter

import numpy as np

from models.attribution import attribute
from models.calibration import TailCalibrator
from models.calibration_bank import CalibrationBank
from models.classification import KINDS, SEVERITIES, GrowthTracker, classify, climb, severity
from models.daily_profile import DailyProfiles
from models.drift import CompactPageHinkley
from models.fleet import FleetForests
from models.incidents import (
    NO_SHIFT,
    SHIFT_CAME_BACK,
    IncidentTracker,
    incident_id,
    parse_incident_id,
)
from models.metric_bank import MetricBank, batch_rounds
from models.normalizer import EWStandardizer
from models.peaks import RecentPeaks
from models.recurrence import DailyRecurrenceBank
from models.residual import DampedTrendForecaster
from models.shape import ShapeBank
from models.threshold import (
    AdaptiveThreshold,
    cadence_boost,
    next_interval,
    score_to_surprise,
    surprise_to_score,
)
from models.value_range import RangeBank

FEATURES: tuple[str, ...] = (
    "cpu_pct",
    "mem_pct",
    "disk_read_bps",
    "disk_write_bps",
    "net_in_bps",
    "net_out_bps",
)
_N_FEATURES = len(FEATURES)
_ALL_METRICS = tuple(range(_N_FEATURES))  # `present` of a sample with every metric
_metric_values = itemgetter(*FEATURES)  # a sample's values, FEATURES order
_LOCAL_CHANNELS = ("residual", "level", "shift")
_DAILY = "daily"
_RANGE = "range"
_SHAPE = "shape"
_RESIDUAL_CHANNELS = ("residual",)
# Channels that score only some samples (a metric with a daily rhythm and a ready profile bin;
# a VM past its first day for the range channel; a metric with a range and four stretches of
# values for the shape channel).
_OPTIONAL_CHANNELS = (_DAILY, _RANGE, _SHAPE)
# Channels that answer beside the combined calibration (see `EngineConfig.range_factor`).
_APART_CHANNELS = (_RANGE, _SHAPE)
_COMBINED = "combined"
_OTHER = KINDS.index("other")  # the kind of a sample that cannot alert
# Calibrator axis scale per channel: forests' [0, 1) scores enter as -ln(1 - s), which spreads
# their anomalous end; 4x puts their typical range on the same bins as z-like scores. The
# range channel's excesses (fractions of a range) get 4x too: on NAB's development subset
# 2x-6x score alike.
_CHANNEL_SCALE = {"halfspace": 4.0, "iforest": 4.0, _RANGE: 4.0}
# Channels calibrated on a linear axis (raw * scale, 0.125 per bin) whatever
# `calibration_log_axis` says: the shape channel's distances (fractions of a range) have an
# exponential tail, and on a log axis a change of pattern scored no rarer than p = 1e-3 on
# NAB's development subset.
_LINEAR_SCALE = {_SHAPE: 8.0}
_FORMAT_VERSION = 4
# v3 appended `RecentPeaks`, v4 the daily profiles; older VMs start those afresh
_READABLE_VERSIONS = (2, 3, 4)
_PROFILE_BLOB = "daily_profile_bins"
# The range channel's envelope, a blob added within v4: readers that do not know it skip it,
# and a VM restored without it starts its envelope afresh.
_RANGE_BLOB = "value_range"
# The shape channel's rings of 4-bit codes, likewise a blob within v4 (those of 1-byte codes,
# "shape_history", are skipped: the ring starts afresh).
_SHAPE_BLOB = "shape_codes"
# The lasting shift an incident was named `level_shift` by (`IncidentTracker.shift_state`),
# likewise a blob within v4, written only after a shift: restored without it, a held level
# shift cannot be told coming back.
_SHIFT_BLOB = "incident_shift"
# The VM's sampling interval (`threshold.next_interval`), likewise a blob within v4: restored
# without it, the VM's next gap sets it afresh.
_INTERVAL_BLOB = "sampling_interval"
_P_FLOOR = 1e-15  # smallest p-value reported: scores stay distinguishable in doubles
_LN10 = math.log(10.0)  # -ln p per unit of -log10 p


@dataclass(slots=True)  # not frozen: a frozen dataclass is three times as slow to create
class Sample:
    """One observation of one VM: event time in epoch seconds and any subset of FEATURES."""

    vm_id: str
    ts: float
    values: dict[str, float]


def _counted_surprises(channel_surprises: tuple) -> dict[str, float]:
    """{channel: surprise} of the counted channels, from (channels, surprise per channel,
    counted per channel)."""
    channels, row, counted = channel_surprises
    return dict(compress(zip(channels, row, strict=True), counted))


def channel_evidence(
    present: Sequence[int],
    surprises: dict[str, float],
    residual: list[float],
    z: list[float],
    daily: list[float],
    shape: list[float] | None = None,
) -> dict[str, float]:
    """Each channel's surprise spread over the present metrics by how much each deviated.

    Forecast residuals weigh the residual channel's share, profile scores the daily one's,
    shape scores the shape channel's (when it scored some metric) and z-scores the others'.
    """
    s_res = sum(surprises.get(name, 0.0) for name in _RESIDUAL_CHANNELS)
    s_day = surprises.get(_DAILY, 0.0)
    shape_sq = [v * v for v in shape] if shape else [0.0] * len(present)
    s_shape = surprises.get(_SHAPE, 0.0) if any(shape_sq) else 0.0
    s_lvl = sum(surprises.values()) - s_res - s_day - s_shape
    res_sq = [r * r for r in residual]
    z_sq = [v * v for v in z]
    day_sq = [d * d if d > 0.0 else 0.0 for d in daily]
    k_res = s_res / (sum(res_sq) or 1.0)
    k_lvl = s_lvl / (sum(z_sq) or 1.0)
    k_day = s_day / (sum(day_sq) or 1.0)
    k_shape = s_shape / (sum(shape_sq) or 1.0)
    return {
        FEATURES[i]: k_res * res_sq[j] + k_lvl * z_sq[j] + k_day * day_sq[j] + k_shape * shape_sq[j]
        for j, i in enumerate(present)
    }


def _channel_axis_scale(name: str, c: EngineConfig) -> float:
    """The scale of a channel calibrator's axis (see `calibration.TailCalibrator`)."""
    if name in _LINEAR_SCALE:
        return _LINEAR_SCALE[name]
    return _CHANNEL_SCALE.get(name, 1.0) if c.calibration_log_axis else c.calibration_bin


def _range_seen(ranges_before: np.ndarray | None, loc: _Local) -> dict[str, dict[str, float]]:
    """The lowest and highest values each present metric had shown before the sample (to the
    range bank's float32 digits); metrics seen for the first time are left out."""
    if ranges_before is None:
        return {}
    highs, lows = ranges_before[loc.row].tolist()
    return {
        FEATURES[i]: {"lowest": float(f"{lows[i]:.7g}"), "highest": float(f"{highs[i]:.7g}")}
        for i in loc.present
        if highs[i] == highs[i]
    }


@dataclass
class Assessment:
    """What the engine concluded about one sample."""

    vm_id: str
    ts: float
    score: float
    threshold: float
    values: dict[str, float]
    event: dict | None = None
    severity: str | None = None
    kind: str | None = None
    # What `surprises` and `evidence` are computed from, when first read: most samples' are
    # never looked at. (the sample's VM-local result, (channels, surprise per channel,
    # counted per channel)), see `channel_evidence`.
    evidence_parts: tuple | None = field(default=None, repr=False)

    @property
    def is_anomalous(self) -> bool:
        return self.score >= self.threshold

    @cached_property
    def surprises(self) -> dict[str, float]:
        """Each counted channel's surprise (-ln p) for this sample; empty if not scored."""
        if self.evidence_parts is None:
            return {}
        return _counted_surprises(self.evidence_parts[1])

    @cached_property
    def evidence(self) -> dict[str, float]:
        """How much each metric deviated, weighted by the evidence of each channel (any scale)."""
        if self.evidence_parts is None:
            return {}
        loc = self.evidence_parts[0]
        return channel_evidence(
            loc.present, self.surprises, loc.residual, loc.z, loc.daily, loc.shape
        )

    @cached_property
    def attribution(self) -> dict[str, float]:
        """The score spread over the metrics in proportion to their evidence (sums to it).

        Computed when first read: most samples' attribution is never looked at."""
        return attribute(self.score, self.evidence)


@dataclass
class EngineConfig:
    """Engine settings; simple types only, so the stream layer can set each from env."""

    threshold: float = 99.8  # base alert threshold on the 0-100 score (p < 0.002)
    # ...for a VM sampled every `threshold_interval` seconds (NAB's five minutes, where the
    # base was chosen) or slower. A VM sampled every dt < that needs a rarer surprise, p
    # below 0.002 * dt / 300 (99.96 at one minute), so that chance alerts per hour stay the
    # same. On the simulated fleet at one minute the base opened 1.6 false incidents per
    # VM-day and this 0.3, finding as much. 0: the base for every cadence.
    threshold_interval: float = 300.0
    severity_medium: float = 99.99
    severity_high: float = 99.999
    severity_critical: float = 99.9999
    warmup: int = 30  # samples per VM before it is scored
    recovery: int = 12  # calm samples that resolve an incident
    # ...but not one named `level_shift` before this many seconds from the shift: a level that
    # comes back within half an hour was an excursion (named as before the shift), not a new
    # normal. On the simulated fleet an hour found one anomaly fewer and named two fewer (a
    # false incident held open longer took in the next anomaly).
    shift_hold: float = 1_800.0
    # Inside an open incident a sample that does not escalate it is no news: its score is
    # capped at `dedup_fraction` of the base threshold's surprise (0.5 of p < 0.002: p < 0.045,
    # score 95.5), so a sustained anomaly reads as one detection, not one per sample.
    incident_dedup: bool = True
    dedup_fraction: float = 0.5
    # Discount a sample's largest channel surprise by what recurred at this time of day on
    # both previous days (`recurrence.DailyRecurrenceBank`), before the combined calibration: a
    # daily job's spike stops alerting on its third day, and stops teaching the VM's combined
    # calibrator that big surprises are common.
    daily_recurrence: bool = True
    recurrence_floor: float = 2.0  # -log10 p: only the part of a recurring surprise above it
    # Also discount a surprise no bigger than the peaks of both of the last two surprising
    # episodes when both fell within `recent_horizon` seconds (`peaks.RecentPeaks`): the same
    # thing a third time in a day, on any rhythm, is not news. An episode ends when an incident
    # opened in it could no longer continue (`recovery + holdoff` calm samples).
    recent_recurrence: bool = True
    recent_horizon: float = 86_400.0
    holdoff: int = 36  # samples after resolution in which a re-trigger continues the incident
    seed: int = 0
    # Time-of-day profiles (`daily_profile.DailyProfiles`): the `daily` channel scores a
    # sample against what its metric usually reads at this hour, for metrics with a rhythm.
    daily_profile: bool = True
    profile_bins: int = 24
    profile_day_alpha: float = 0.3  # per day
    profile_floor: float = 0.1  # of the metric's mean deviation from its level
    profile_gate: float = 0.4  # profile deviation / level deviation below which it counts
    # The `range` channel (`value_range.RangeBank`): how far a sample goes beyond the highest
    # and lowest values its VM has shown, which relax toward later values by `range_decay`
    # per sample (a half-life of ~23,000 samples: 16 days at 1 minute, 80 at 5; a faster
    # relaxation makes the top of a spiky VM's usual range read as a record). It scores a VM
    # once `range_settle` seconds have passed since its first sample: its first day sets
    # records.
    value_range: bool = True
    range_decay: float = 3e-5
    range_settle: float = 86_400.0
    # The range channel answers beside the combined calibration, not through it: the final
    # p-value is the smaller of the other channels' combined one and `range_factor` times the
    # range channel's own (2: Bonferroni for the two). Through it, a VM whose routine spikes
    # have taught its combined calibrator that big surprises are common would read a record
    # as ordinary. 0: the range (and shape) channel joins the combination like the others.
    range_factor: float = 2.0
    # Mass of the range channel's fitted upper tail (`calibration_tail` for the other
    # channels). The channel reads 0 for nearly every sample, so a larger tail takes in part
    # of that zero mass and extrapolates steeply: a modest new record reads as rare. On the
    # simulated fleet 0.005 took false incidents per VM-day from 0.30-0.34 to 0.17-0.20 with
    # every anomaly still found; on NAB's development subset it leaves the product's own
    # alerts as they are (70.2) but lowers the best-threshold score from 73.3 to 71.1
    # (docs/benchmarks.md).
    range_tail: float = 0.02
    # The `shape` channel (`shape.ShapeBank`): how unlike any stretch of its last
    # `shape_history` values a metric's latest `shape_length` values are, in units of its
    # range, scored on every `shape_every`-th value; it answers beside the combined
    # calibration like the range channel, through the same `range_factor`. It needs
    # `value_range`. Half a byte per value, metric and VM (768 B per VM at 256); 0: off. On
    # NAB's development subset histories of 128-512 and every 2nd-16th stretch score alike
    # (docs/benchmarks.md).
    shape_history: int = 256
    shape_length: int = 8
    shape_every: int = 8
    # per-metric state
    scaler_alpha: float = 0.01
    scaler_clip: float = 3.0
    forecast_alpha: float = 0.3
    forecast_beta: float = 0.05
    forecast_phi: float = 0.9
    residual_alpha: float = 0.02
    drift_delta: float = 0.5
    drift_threshold: float = 20.0
    leak_growth: float = 0.4
    # a leak's first alert: memory above typical by this many standard deviations on the
    # sample before, and risen by as many since (`classification.climb`)
    leak_climb: float = 2.0
    shift_alpha: float = 0.2
    # calibration (raw scores -> p-values; see `calibration.TailCalibrator`)
    calibration_half_life: float = 2000.0  # samples of memory (a week at 5 min)
    calibration_tail: float = 0.02  # mass above the threshold of the fitted exponential tail
    calibration_min: int = 50  # scores a calibrator needs before it gives p-values
    calibration_log_axis: bool = True  # channels: log axis (heavy tails) or linear (exponential)
    calibration_bin: float = 0.5  # linear axis only: 0.125 / 0.5 = 0.25 raw units per bin
    calibration_prior_excess: float = 1.5  # typical tail mean excess, in bins
    combined_log_axis: bool = False  # the combined surprise has an exponential tail: linear
    # The combined calibrator learns a surprise rarer than p = `combined_winsor` as one of
    # exactly that rarity (winsorised): one extreme anomaly does not make the next look
    # ordinary. 0: off.
    combined_winsor: float = 1e-5
    combine: str = "max"  # channel surprises -> one statistic: "max" (any channel) or "sum"
    # fleet forests
    use_halfspace: bool = True
    hst_trees: int = 8
    hst_height: int = 6
    hst_window: int = 250
    forest_min_features: int = 2  # the forests score only samples with this many metrics
    forest_learn_every: int = 4
    use_isolation_forest: bool = True
    iforest_trees: int = 32
    iforest_window: int = 1024
    iforest_learn_chunk: int = 32  # small batches are learned with the next ones (fleet.py)
    # threshold adaptation and feedback
    fp_step: float = 1.0  # -log10 p added to a kind's threshold per false positive
    penalty_half_life: float = 4032.0  # samples (two weeks at 5 min)
    target_rate: float = 0.01  # incidents opened per sample above which the threshold rises
    rate_gain: float = 1.0
    rate_alpha: float = 0.005


class _VMState:
    """Everything the engine keeps for one VM."""

    __slots__ = (
        "seen",
        "slot",
        "threshold",
        "incident",
        "last_score",
        "last_threshold",
        "last_ts",
        "alerts",
        "peaks",
    )

    def __init__(self, config: EngineConfig, slot: int) -> None:
        c = config
        self.seen = 0
        # row of the VM's state in the engine's banks (`MetricBank`, `CalibrationBank`, ...)
        self.slot = slot
        self.threshold = AdaptiveThreshold()
        self.incident = IncidentTracker()
        self.last_score = 0.0
        self.last_threshold = c.threshold
        self.last_ts = 0.0
        self.alerts = 0
        self.peaks = RecentPeaks()

    def scalar_state(self, bank: MetricBank, recurrence: DailyRecurrenceBank) -> list[float]:
        out = [float(self.seen), self.last_score, self.last_threshold, self.last_ts]
        out.append(float(self.alerts))
        out.extend(bank.shift_state(self.slot))  # EW mean of each metric's signed z-score
        out.extend(bank.state(self.slot))
        out.extend(recurrence.state(self.slot))
        out.extend(self.threshold.state())
        out.extend(self.incident.state())
        out.extend(self.peaks.state())  # v3
        return out

    def load_scalar_state(
        self, values: Sequence[float], bank: MetricBank, recurrence: DailyRecurrenceBank
    ) -> int:
        """Restore from `scalar_state` output; returns how many values it used."""
        self.seen = int(values[0])
        self.last_score, self.last_threshold, self.last_ts = values[1], values[2], values[3]
        self.alerts = int(values[4])
        bank.load_shift_state(self.slot, values[5 : 5 + _N_FEATURES])
        i = 5 + _N_FEATURES
        size = MetricBank.N_STATE_PER_METRIC * _N_FEATURES
        bank.load_state(self.slot, values[i : i + size])
        i += size
        recurrence.load_state(self.slot, tuple(values[i : i + DailyRecurrenceBank.N_STATE]))
        i += DailyRecurrenceBank.N_STATE
        self.threshold.load_state(tuple(values[i : i + AdaptiveThreshold.N_STATE]))
        i += AdaptiveThreshold.N_STATE
        self.incident.load_state(tuple(values[i : i + IncidentTracker.N_STATE]))
        i += IncidentTracker.N_STATE
        if len(values) >= i + RecentPeaks.N_STATE:  # absent from v2 dumps
            self.peaks.load_state(tuple(values[i : i + RecentPeaks.N_STATE]))
            i += RecentPeaks.N_STATE
        return i


@dataclass(slots=True, eq=False)
class _Local:
    """Result of the VM-local pass for one sample.

    Its per-metric scores stay in the batch's arrays until read: only a sample that may alert,
    or whose evidence is asked for, needs them as lists."""

    state: _VMState
    values: dict[str, float]
    present: Sequence[int]  # the sample's metrics, as indices of FEATURES
    # the batch's Z, R, T, P, per-metric shape scores (None without the channel; see
    # `_Batch`), rises since each metric's previous value, growth indices and what each
    # metric usually read at the sample's hour (None without the daily channel)
    scores: tuple[np.ndarray | None, ...]
    shifted: int  # bit mask: bit i when metric i's level shift was confirmed on the sample
    scored: bool
    row: int  # the sample's row in the batch
    interval: float  # the VM's sampling interval with this sample's gap learned (0: unknown)

    def __eq__(self, other: object) -> bool:
        """The same evidence: what an `Assessment` holds it for (its VM state aside)."""
        if not isinstance(other, _Local):
            return NotImplemented
        return (self.present, self.residual, self.z, self.daily, self.shape) == (
            other.present,
            other.residual,
            other.z,
            other.daily,
            other.shape,
        )

    def _present(self, k: int) -> list[float]:
        row = self.scores[k][self.row]
        if len(self.present) == _N_FEATURES:
            return row.tolist()
        return row[list(self.present)].tolist()

    @property
    def z(self) -> list[float]:
        return self._present(0)

    @property
    def residual(self) -> list[float]:
        return self._present(1)

    @property
    def typical(self) -> list[float]:
        return self._present(2)

    @property
    def daily(self) -> list[float]:
        """Profile scores of the present metrics (-1: none)."""
        return self._present(3)

    @property
    def shape(self) -> list[float]:
        """Shape scores of the present metrics (0: not scored); empty without the channel."""
        if self.scores[4] is None:
            return []
        return [v if v == v else 0.0 for v in self._present(4)]

    @property
    def rise(self) -> list[float]:
        """Each present metric's rise since the VM's previous value of it (0: first)."""
        return self._present(5)

    @property
    def growth(self) -> list[float]:
        """Each present metric's growth index with the sample learned."""
        return self._present(6)

    @property
    def usual_at_this_hour(self) -> dict[str, float]:
        """What the metrics with a daily rhythm usually read at the sample's hour, before it."""
        if self.scores[7] is None:
            return {}
        return {
            FEATURES[i]: v for i, v in zip(self.present, self._present(7), strict=True) if v == v
        }


@dataclass(slots=True)
class _Batch:
    """The VM-local pass's per-metric arrays for a batch (rows = samples, columns = FEATURES)."""

    slots: np.ndarray  # per sample: its VM's row in the banks
    present: np.ndarray  # bool: the sample has a finite value of the metric
    Z: np.ndarray  # z-scores (0 where absent)
    R: np.ndarray  # forecast residual scores
    P: np.ndarray  # daily-profile scores (-1: none)
    ts: np.ndarray  # event times
    # per sample: largest excess over its VM's range (NaN: VM too young; the range channel)
    beyond: np.ndarray | None
    ranges_before: np.ndarray | None  # the ranges they were scored against (rows, 2, metrics)
    shift: np.ndarray  # per sample: largest |EW mean of a metric's clipped z-score|
    # per sample and metric: the shape channel's raw score (NaN: not scored)
    shape: np.ndarray | None


def _follow_shift(
    inc: IncidentTracker, ts: float, loc: _Local, weights: dict[str, float], kind_before: int
) -> None:
    """A lasting shift confirmed inside the open incident: a first one names it `level_shift`
    (the fired metric with the most evidence is the one that shifted); that metric's level
    shifting again, back at least halfway to where it was, names it as before (an excursion)."""
    present = loc.present
    if inc.shift_metric == NO_SHIFT:
        fired = [k for k, j in enumerate(present) if loc.shifted >> j & 1]
        k = max(fired, key=lambda k: weights.get(FEATURES[present[k]], 0.0))
        inc.mark_shift(ts, present[k], loc.typical[k], kind_before)
    elif inc.shift_pending and loc.shifted >> inc.shift_metric & 1:
        k = present.index(inc.shift_metric)
        x = loc.values[FEATURES[inc.shift_metric]]
        if abs(x - inc.shift_from) < abs(x - loc.typical[k]):
            inc.shift_came_back()


class AnomalyEngine:
    """Scores and learns samples of many VMs; emits incident events (see module docstring)."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config if config is not None else EngineConfig()
        c = self.config
        self._fleet = FleetForests(
            FEATURES,
            seed=c.seed,
            use_halfspace=c.use_halfspace,
            hst_trees=c.hst_trees,
            hst_height=c.hst_height,
            hst_window=c.hst_window,
            learn_every=c.forest_learn_every,
            use_isolation_forest=c.use_isolation_forest,
            iforest_trees=c.iforest_trees,
            iforest_window=c.iforest_window,
            iforest_learn_chunk=c.iforest_learn_chunk,
        )
        if c.shape_history > 0 and not c.value_range:
            raise ValueError(
                "the shape channel measures in units of the range: it needs value_range "
                "(or shape_history = 0, which turns it off)"
            )
        self.channels: tuple[str, ...] = (
            _LOCAL_CHANNELS
            + ((_DAILY,) if c.daily_profile else ())
            + ((_RANGE,) if c.value_range else ())
            + ((_SHAPE,) if c.shape_history > 0 else ())
            + self._fleet.names
        )
        self._vms: dict[str, _VMState] = {}
        # One calibrator per channel and one for their combination, for every VM.
        self._columns = {name: j for j, name in enumerate((*self.channels, _COMBINED))}
        self._calibration = CalibrationBank(
            [
                TailCalibrator(
                    _channel_axis_scale(name, c),
                    c.calibration_half_life,
                    c.range_tail if name == _RANGE else c.calibration_tail,
                    c.calibration_min,
                    log_axis=c.calibration_log_axis and name not in _LINEAR_SCALE,
                    prior_excess=c.calibration_prior_excess,
                )
                for name in self.channels
            ]
            # The combined surprise (-ln p) has an exponential tail: a linear axis, 0.5 per bin.
            + [
                TailCalibrator(
                    1.0 if c.combined_log_axis else 0.25,
                    c.calibration_half_life,
                    c.calibration_tail,
                    c.calibration_min,
                    log_axis=c.combined_log_axis,
                    prior_excess=1.5 if c.combined_log_axis else 2.0,
                    winsor_p=c.combined_winsor,
                )
            ]
        )
        self._recurrence = DailyRecurrenceBank()  # what recurred at each hour, per VM
        # each VM's sampling interval in seconds (0: not known yet), by slot: 8 bytes a VM
        # and no object per VM (an attribute replaced on every sample scatters floats)
        self._intervals = array("d")
        self._bank = MetricBank(
            _N_FEATURES,
            EWStandardizer(c.scaler_alpha, c.scaler_clip),
            DampedTrendForecaster(
                c.forecast_alpha, c.forecast_beta, c.forecast_phi, c.residual_alpha
            ),
            CompactPageHinkley(c.drift_delta, c.drift_threshold),
            GrowthTracker(),
            shift_alpha=c.shift_alpha,
        )
        self._profiles = (
            DailyProfiles(
                _N_FEATURES,
                bins=c.profile_bins,
                day_alpha=c.profile_day_alpha,
                floor=c.profile_floor,
                gate=c.profile_gate,
            )
            if c.daily_profile
            else None
        )
        self._ranges = (
            RangeBank(_N_FEATURES, c.range_decay, c.range_settle) if c.value_range else None
        )
        self._shapes = (
            ShapeBank(_N_FEATURES, c.shape_history, c.shape_length, c.shape_every)
            if c.shape_history > 0
            else None
        )
        self._base_surprise = score_to_surprise(c.threshold)
        self._penalty_decay = 0.5 ** (1.0 / c.penalty_half_life) if c.penalty_half_life > 0 else 1.0
        self._cutoffs = (c.severity_medium, c.severity_high, c.severity_critical)
        self._shift_norm = math.sqrt((2.0 - c.shift_alpha) / c.shift_alpha)
        self._dedup_surprise = c.dedup_fraction * self._base_surprise
        self._episode_gap = c.recovery + c.holdoff

    # ------------------------------------------------------------------ public API

    def process(self, samples: Sequence[Sample]) -> list[Assessment]:
        """Score each sample against what its VM and the fleet learned before it, then learn it."""
        if not samples:
            return []
        local, batch = self._local_pass(samples)
        raws = self._raw_scores(batch, self._fleet_pass(batch.Z, batch.present))
        calibrated = self._calibrate(local, batch.slots, batch.ts, raws)
        return [
            self._decide(sample, loc, cal, batch.ranges_before)
            for sample, loc, cal in zip(samples, local, calibrated, strict=True)
        ]

    def feedback(self, incident_id: str, verdict: str) -> bool:
        """Apply an operator verdict ("false_positive" | "confirmed") to the incident's VM now."""
        if verdict not in ("false_positive", "confirmed"):
            raise ValueError(f"unknown verdict {verdict!r}")
        parsed = parse_incident_id(incident_id)
        if parsed is None:
            return False
        vm_id, opened_ms = parsed
        state = self._vms.get(vm_id)
        if state is None:
            return False
        kind = state.incident.kind_of(opened_ms)
        if kind is None:
            return False
        state.threshold.feedback(KINDS[kind], verdict, self.config.fp_step)
        return True

    def tracked_vms(self) -> int:
        return len(self._vms)

    def knows(self, vm_id: str) -> bool:
        """Whether the engine holds state for `vm_id`."""
        return vm_id in self._vms

    def forget(self, vm_id: str) -> bool:
        """Drop one VM's state (e.g. its partition moved to another worker)."""
        state = self._vms.pop(vm_id, None)
        if state is None:
            return False
        self._bank.release(state.slot)
        return True

    def vm_snapshot(self, vm_id: str) -> dict:
        """JSON-able view of one VM: last score, threshold, typical values, incident, counts."""
        state = self._vms.get(vm_id)
        if state is None:
            return {"vm_id": vm_id, "known": False}
        inc = state.incident
        incident = None
        if inc.active:
            incident = {
                "incident_id": incident_id(vm_id, inc.opened_at),
                "opened_at": inc.opened_at,
                "severity": inc.severity_name,
                "kind": inc.kind_name,
                "peak_score": inc.peak,
            }
        bank, slot = self._bank, state.slot
        typical = {
            name: bank.column("s_mean", slot, i)
            for i, name in enumerate(FEATURES)
            if bank.column("s_n", slot, i)
        }
        return {
            "vm_id": vm_id,
            "known": True,
            "samples": state.seen,
            "last_ts": state.last_ts,
            "last_score": state.last_score,
            "threshold": state.last_threshold,
            # what the threshold's cadence term learned (None: not yet)
            "sampling_interval_s": self._intervals[state.slot] or None,
            "typical": typical,
            "usual_at_this_hour": self._usual(state, range(_N_FEATURES), state.last_ts),
            "open_incident": incident,
            "incidents_opened": inc.opened,
            "alerts": state.alerts,
            "feedback_penalty": dict(zip(KINDS, state.threshold.penalty, strict=True)),
            "state_bytes": self.state_bytes(vm_id),
        }

    def dump_vm(self, vm_id: str) -> bytes:
        """Compact serialisation of one VM's state (scalars as float64, reservoirs as float32)."""
        state = self._vms[vm_id]
        scalars = state.scalar_state(self._bank, self._recurrence)
        blobs = {
            name: self._calibration.to_bytes(state.slot, column)
            for name, column in self._columns.items()
        }
        if self._profiles is not None:
            profile_scalars, blobs[_PROFILE_BLOB] = self._profiles.state(state.slot)
            scalars.extend(profile_scalars)  # v4
        if self._ranges is not None:
            blobs[_RANGE_BLOB] = self._ranges.to_bytes(state.slot)
        if self._shapes is not None:
            blobs[_SHAPE_BLOB] = self._shapes.to_bytes(state.slot)
        if state.incident.shift_metric != NO_SHIFT:
            blobs[_SHIFT_BLOB] = struct.pack("<4d", *state.incident.shift_state())
        if self._intervals[state.slot] > 0.0:
            blobs[_INTERVAL_BLOB] = struct.pack("<d", self._intervals[state.slot])
        parts = [struct.pack("<BHH", _FORMAT_VERSION, len(scalars), len(blobs))]
        parts.append(struct.pack(f"<{len(scalars)}d", *scalars))
        for name, blob in blobs.items():
            key = name.encode()
            parts.append(struct.pack("<BI", len(key), len(blob)) + key + blob)
        return b"".join(parts)

    def load_vm(self, vm_id: str, data: bytes) -> None:
        """Restore one VM from `dump_vm` output (replacing any state it had)."""
        version, n_scalars, n_channels = struct.unpack_from("<BHH", data, 0)
        if version not in _READABLE_VERSIONS:
            raise ValueError(f"unsupported VM state version {version}")
        offset = struct.calcsize("<BHH")
        scalars = struct.unpack_from(f"<{n_scalars}d", data, offset)
        offset += 8 * n_scalars
        previous = self._vms.pop(vm_id, None)
        if previous is not None:
            self._bank.release(previous.slot)
        state = _VMState(self.config, self._allocate())
        used = state.load_scalar_state(scalars, self._bank, self._recurrence)
        profile_scalars = scalars[used:] if version >= 4 else ()
        for _ in range(n_channels):
            klen, blen = struct.unpack_from("<BI", data, offset)
            offset += struct.calcsize("<BI")
            name = data[offset : offset + klen].decode()
            offset += klen
            blob = data[offset : offset + blen]
            offset += blen
            if name in self._columns:
                self._calibration.load_bytes(state.slot, self._columns[name], blob)
            elif name == _PROFILE_BLOB and self._profiles is not None and profile_scalars:
                self._profiles.load_state(state.slot, profile_scalars, blob)
            elif name == _RANGE_BLOB and self._ranges is not None:
                self._ranges.load_bytes(state.slot, blob)
            elif name == _SHAPE_BLOB and self._shapes is not None:
                self._shapes.load_bytes(state.slot, blob)
            elif name == _SHIFT_BLOB:
                state.incident.load_shift_state(struct.unpack("<4d", blob))
            elif name == _INTERVAL_BLOB:
                (self._intervals[state.slot],) = struct.unpack("<d", blob)
        self._vms[vm_id] = state

    def state_bytes(self, vm_id: str) -> int:
        """Size of the VM's serialised state in bytes."""
        return len(self.dump_vm(vm_id)) if vm_id in self._vms else 0

    # ------------------------------------------------------------------ passes

    def _state(self, vm_id: str) -> _VMState:
        state = self._vms.get(vm_id)
        if state is None:
            state = self._vms[vm_id] = _VMState(self.config, self._allocate())
        return state

    def _usual(self, state: _VMState, metrics: Iterable[int], ts: float) -> dict[str, float]:
        """What the VM's metrics with a daily rhythm usually read at `ts`'s hour."""
        if self._profiles is None:
            return {}
        usual = {FEATURES[i]: self._profiles.usual(state.slot, i, ts) for i in metrics}
        return {name: value for name, value in usual.items() if value is not None}

    def _allocate(self) -> int:
        slot = self._bank.allocate()
        if slot >= len(self._intervals):
            self._intervals.extend([0.0] * (slot + 1 - len(self._intervals)))
        self._intervals[slot] = 0.0
        self._calibration.reset(slot)
        self._recurrence.reset(slot)
        if self._profiles is not None:
            self._profiles.reset(slot)
        if self._ranges is not None:
            self._ranges.reset(slot)
        if self._shapes is not None:
            self._shapes.reset(slot)
        return slot

    def _local_pass(self, samples: Sequence[Sample]) -> tuple[list[_Local], _Batch]:
        """Per-metric scores of each sample against its VM's state before it, then learn it.

        Returns the per-sample results and the batch's per-metric arrays.
        """
        vms = self._vms
        states = [vms.get(sample.vm_id) or self._state(sample.vm_id) for sample in samples]
        # None, NaN and infinities: the metric is absent
        nan = math.nan
        try:  # every sample names every metric (as validated records do): one call each
            flat = list(chain.from_iterable(map(_metric_values, [s.values for s in samples])))
        except KeyError:
            flat = [sample.values.get(name, nan) for sample in samples for name in FEATURES]
        X = np.array(flat, float).reshape(len(samples), _N_FEATURES)
        finite = np.isfinite(X)
        X[~finite] = nan
        slots: list[int] = []
        warm: list[bool] = []
        gaps: list[float] = []
        interval_at: list[float] = []
        warmup = self.config.warmup
        intervals = self._intervals
        for sample, state in zip(samples, states, strict=True):
            slots.append(state.slot)
            warm.append(state.seen >= warmup)
            state.seen += 1
            gap = sample.ts - state.last_ts if state.last_ts else 0.0
            if gap > 0.0:
                intervals[state.slot] = next_interval(intervals[state.slot], gap)
            interval_at.append(intervals[state.slot])
            gaps.append(gap)
            state.last_ts = sample.ts  # in order, so a VM's next sample in the batch sees it
        presents: list[Sequence[int]]
        values_of: list[dict[str, float]]
        if finite.all() and all(len(s.values) == _N_FEATURES for s in samples):
            # every sample holds every metric, finite, and nothing else (as validated records
            # do): its own values are the ones to report
            presents = [_ALL_METRICS] * len(samples)
            values_of = [sample.values for sample in samples]
        else:
            presents, values_of = [], []
            for row, row_finite, complete in zip(
                X.tolist(), finite.tolist(), finite.all(axis=1).tolist(), strict=True
            ):
                if complete:
                    presents.append(_ALL_METRICS)
                    values_of.append(dict(zip(FEATURES, row, strict=False)))  # same length
                else:
                    present = [i for i, f in enumerate(row_finite) if f]
                    presents.append(present)
                    values_of.append({FEATURES[i]: row[i] for i in present})
        slot_array = np.array(slots, dtype=np.intp)
        Z, R, T, shifted, shift, rise, growth = self._bank.observe(
            slot_array, X, np.array(warm, dtype=bool)
        )
        time_array = np.array([sample.ts for sample in samples], dtype=float)
        if self._profiles is not None:
            P, usual = self._profiles.observe(slot_array, time_array, np.array(gaps), X)
        else:
            P, usual = np.full(X.shape, -1.0), None
        beyond = ranges_before = shape = None
        if self._ranges is not None:
            beyond, ranges_before = self._ranges.observe(slot_array, time_array, X)
        if self._shapes is not None:
            shape = self._shapes.observe(slot_array, X, ranges_before)
        scores = (Z, R, T, P, shape, rise, growth, usual)
        local = [
            _Local(state, values, present, scores, is_shifted, is_warm and bool(present), row, dt)
            for row, (state, values, present, is_warm, is_shifted, dt) in enumerate(
                zip(states, values_of, presents, warm, shifted.tolist(), interval_at, strict=True)
            )
        ]
        return local, _Batch(
            slot_array, finite, Z, R, P, time_array, beyond, ranges_before, shift, shape
        )

    def _fleet_pass(self, Z: np.ndarray, present: np.ndarray) -> dict[str, np.ndarray]:
        if not self._fleet.names:
            return {}
        Z = np.clip(Z, -8.0, 8.0)
        # The forests only see samples with enough metrics: for one metric the level channel
        # already says everything a density over one z-score could.
        rows = present.sum(axis=1) >= self.config.forest_min_features
        return self._fleet.score_and_learn(Z, rows)

    def _raw_scores(self, batch: _Batch, fleet: dict[str, np.ndarray]) -> np.ndarray:
        """Each channel's raw score per sample (rows) in `channels` order; NaN where a channel
        does not score the sample."""
        present = batch.present
        # shift: EW mean of signed z per metric (kept in the metric bank), in units of its own
        # noise level on pure noise; a sustained moderate move accumulates, noise averages out.
        columns = [
            np.where(present, batch.R, -np.inf).max(axis=1),  # residual
            np.where(present, np.abs(batch.Z), -np.inf).max(axis=1),  # level
            batch.shift * self._shift_norm,
        ]
        if _DAILY in self._columns:  # where some metric has a daily rhythm and a ready bin
            daily = np.where(present, batch.P, -np.inf).max(axis=1)
            columns.append(np.where(daily >= 0.0, daily, np.nan))
        if batch.beyond is not None:  # range
            columns.append(batch.beyond)
        if batch.shape is not None:  # the largest over the metrics (NaN: none scored)
            columns.append(np.fmax.reduce(batch.shape, axis=1))
        for name in self._fleet.names:  # NaN: that forest is not ready or skipped the sample
            if name in fleet:
                columns.append(-np.log(np.maximum(1e-12, 1.0 - fleet[name])))
            else:
                columns.append(np.full(len(present), np.nan))
        return np.stack(columns, axis=1)

    def _calibrate(
        self, local: list[_Local], slots: np.ndarray, ts: np.ndarray, raws: np.ndarray
    ) -> list[tuple[list[float], list[bool], float] | None]:
        """Per scored sample, each channel's surprise (-ln p), whether it counts, and the
        final p-value.

        Every channel's raw score becomes a p-value under the VM's calibrator for it (then is
        learned); the largest surprise but the range and shape channels', less what recurred
        at this time of day on both previous days, calibrated once more on its own recent
        history, gives the final p-value (uniform on a stationary stream whatever the
        channels' correlation), unless `range_factor` times the smaller of the range and shape
        channels' p-values is smaller.
        It starts once every channel's calibrator gives p-values (an optional channel counts
        once its own does, and so does one that starts after the VM is scored: the forests of
        a worker that took the VM over). All calibrators of a batch run in the bank together,
        in rounds in which no VM repeats (which equals sample order: VMs are independent)."""
        out: list[tuple[list[float], list[bool], float] | None] = [None] * len(local)
        scored = np.flatnonzero(np.fromiter((loc.scored for loc in local), bool, len(local)))
        if not len(scored):
            return out
        bank, channels = self._calibration, self.channels
        combined = self._columns[_COMBINED]
        optional = np.array([name in _OPTIONAL_CHANNELS for name in channels])
        sum_combine = self.config.combine == "sum"
        range_factor = self.config.range_factor
        apart = [j for j, name in enumerate(channels) if name in _APART_CHANNELS]
        if range_factor <= 0:  # they join the combination like the other channels
            apart = []
        recurring = self.config.daily_recurrence
        floor = self.config.recurrence_floor
        # the k-th round holds each VM's k-th scored sample
        for group in batch_rounds(slots[scored]):
            members = scored[group]
            member_slots = slots[members]
            scores = raws[members]
            valid = ~np.isnan(scores)  # the pairs (sample, channel) to calibrate, row by row
            ps, counted = bank.observe(
                np.repeat(member_slots, valid.sum(axis=1)), np.nonzero(valid)[1], scores[valid]
            )
            surprise = np.zeros(scores.shape)
            surprise[valid] = -np.log(np.fmax(ps, _P_FLOOR))
            young = np.zeros(scores.shape, dtype=bool)
            young[valid] = np.logical_not(counted)
            kept = valid & ~(young & optional)  # a young optional channel is left out
            ready = ~(young & ~optional).any(axis=1)  # every counted channel gives p-values
            if not ready.all():
                # A VM already scored stays scored when a channel starts later (the fleet
                # forests of a worker that restarted or took a partition over, learning
                # afresh): the young channel is left out until its calibrator counts.
                for r in np.flatnonzero(~ready).tolist():
                    if bank.count(int(member_slots[r]), combined) >= bank.min_count(combined):
                        ready[r] = True
                        kept[r] &= ~young[r]
            kept_surprise = np.where(kept, surprise, 0.0)
            if apart:  # the range and shape channels answer on their own, below
                apart_surprise = kept_surprise[:, apart].max(axis=1)
                kept_surprise[:, apart] = 0.0
            tops = kept_surprise.sum(axis=1) if sum_combine else kept_surprise.max(axis=1)
            if recurring:
                tops = self._discount_recurring(member_slots, ts[members], tops, floor)
            finals = np.ones(len(members))  # the p-value of a VM whose channels are not ready
            if ready.any():
                ready_finals, _ = bank.observe(
                    member_slots[ready], np.full(int(ready.sum()), combined), tops[ready]
                )
                if apart:
                    apart_p = range_factor * np.exp(-apart_surprise[ready])
                    ready_finals = np.fmin(ready_finals, apart_p)
                finals[ready] = np.fmin(1.0, np.fmax(ready_finals, _P_FLOOR))
            rows = zip(
                members.tolist(), surprise.tolist(), kept.tolist(), finals.tolist(), strict=True
            )
            for i, row, keep, p in rows:
                out[i] = (row, keep, p)
        return out

    def _discount_recurring(
        self, slots: np.ndarray, ts: np.ndarray, tops: np.ndarray, floor: float
    ) -> np.ndarray:
        """Each sample's top surprise (-ln p) less the part above `floor` (-log10 p) of what
        recurred at its time of day on both previous days; each VM's recurrence learns the
        undiscounted surprise. `slots` are distinct (one round of a batch)."""
        expected = self._recurrence.expected(slots, ts)
        self._recurrence.learn(slots, ts, tops / _LN10)
        discount = (expected - floor) * _LN10
        discounted = np.where(tops > discount, tops - discount, 0.0)
        return np.where(expected > floor, discounted, tops)

    def _decide(
        self,
        sample: Sample,
        loc: _Local,
        calibrated: tuple[list[float], list[bool], float] | None,
        ranges_before: np.ndarray | None,
    ) -> Assessment:
        c = self.config
        state = loc.state
        if calibrated is None:  # not scored
            state.last_score = 0.0
            return Assessment(sample.vm_id, sample.ts, 0.0, state.last_threshold, loc.values)
        row, counted, p = calibrated
        surprise = -math.log10(p)
        if c.recent_recurrence:
            peaks = state.peaks
            recent = peaks.expected(sample.ts, c.recent_horizon)
            peaks.learn_one(sample.ts, surprise, c.recurrence_floor, self._episode_gap)
            # no bigger than both recent peaks: not news
            if recent >= surprise and recent > c.recurrence_floor:
                discount = recent - c.recurrence_floor
                surprise = surprise - discount if surprise > discount else 0.0
                p = 10.0**-surprise
        score = 100.0 * (1.0 - p)

        channel_surprises = (self.channels, row, counted)
        evidence_parts = (loc, channel_surprises)
        inc = state.incident
        base = self._base_surprise + cadence_boost(loc.interval, c.threshold_interval)
        floor = state.threshold.surprise_threshold(base, None, c.target_rate, c.rate_gain)
        if surprise < floor and not inc.active:
            # Quiet (nearly every sample): it cannot alert and there is no incident to go on
            # with, so there is nothing to classify, cap or report.
            if not state.threshold.same_for_every_kind:  # after verdicts: kinds differ
                floor = state.threshold.surprise_threshold(
                    base, "other", c.target_rate, c.rate_gain
                )
            threshold = surprise_to_score(floor)
            state.last_score = score
            state.last_threshold = threshold
            inc.step(sample.ts, False, score, 0, _OTHER, c.recovery, c.holdoff)
            state.threshold.observe(False, c.rate_alpha, self._penalty_decay)
            return Assessment(
                sample.vm_id, sample.ts, score, threshold, loc.values, evidence_parts=evidence_parts
            )
        # At or above the lowest bar, or inside an incident: classify what moved.
        surprises = _counted_surprises(channel_surprises)
        weights = channel_evidence(
            loc.present, surprises, loc.residual, loc.z, loc.daily, loc.shape
        )
        values = loc.values
        typical = loc.typical
        deviation = {name: values[name] - typical[j] for j, name in enumerate(weights)}
        growth = dict(zip(weights, loc.growth, strict=True))
        climbs = {
            name: climb(deviation[name], r, z)
            for name, r, z in zip(weights, loc.rise, loc.z, strict=True)
        }
        # A shift confirmed on the sample that would open an incident may be a spike on top of
        # a slow drift: the kind is what moved; a lasting shift relabels it later (until the
        # shifted level comes back, then the incident is named what moved again).
        shift = inc.active and bool(loc.shifted) and inc.shift_metric != SHIFT_CAME_BACK
        kind = classify(
            attribute(score, weights), deviation, growth, shift, c.leak_growth, climbs, c.leak_climb
        )

        thr_surprise = state.threshold.surprise_threshold(base, kind, c.target_rate, c.rate_gain)
        threshold = surprise_to_score(thr_surprise)
        anomalous = surprise >= thr_surprise
        sev = severity(score, threshold, *self._cutoffs) if anomalous else None
        state.last_score = score
        state.last_threshold = threshold

        severity_before = inc.severity
        kind_before = inc.kind
        was_open = inc.active or inc.since_resolved <= c.holdoff
        status = inc.step(
            sample.ts,
            anomalous,
            score,
            SEVERITIES.index(sev) if sev else 0,
            KINDS.index(kind),
            c.recovery,
            c.holdoff,
            c.shift_hold,
        )
        if inc.active and loc.shifted and status != "open" and inc.kind_name != "memory_leak":
            _follow_shift(inc, sample.ts, loc, weights, kind_before)
        elif inc.active and anomalous and kind == "memory_leak":
            inc.set_kind(KINDS.index("memory_leak"))

        # The alert rate counts incidents opened, not samples above the bar: a long anomaly is
        # one alert (it must not raise the threshold for the next one), a flapping VM many.
        state.threshold.observe(status == "open", c.rate_alpha, self._penalty_decay)
        news = status == "open" or (status == "update" and inc.severity > severity_before)
        if c.incident_dedup and (inc.active or status == "resolved") and was_open and not news:
            # A continuing incident: the evidence is already reported, keep it below the bar.
            capped = surprise_to_score(self._dedup_surprise)
            if score > capped:
                score = capped
                state.last_score = score

        assessment = Assessment(
            sample.vm_id,
            sample.ts,
            score,
            threshold,
            loc.values,
            severity=sev,
            kind=kind if anomalous else None,
            evidence_parts=evidence_parts,
        )
        assessment.surprises = surprises  # already computed: the cached values
        assessment.evidence = weights
        if status is not None:
            if status != "resolved":
                state.alerts += 1
            assessment.event = {
                "incident_id": incident_id(sample.vm_id, inc.opened_at),
                "vm_id": sample.vm_id,
                "status": status,
                "ts": sample.ts,
                "opened_at": inc.opened_at,
                "score": score,
                "threshold": threshold,
                "severity": inc.severity_name,
                "kind": inc.kind_name,
                "attribution": assessment.attribution,
                "typical": {FEATURES[i]: t for i, t in zip(loc.present, typical, strict=True)},
                "actual": dict(loc.values),
                "usual_at_this_hour": loc.usual_at_this_hour,
                "range_seen": _range_seen(ranges_before, loc),
            }
        return assessment
