"""Forecast accuracy/calibration and predictive-vs-reactive scaling benchmark.

Run: `python -m bench.forecast` (options: --quick, --no-fleet, --no-river, --out PATH).

1. Forecasts on NAB's EC2 CPU and network series (5-minute data, read from
   `../shared/nab-dev/` or $NOVACRON_NAB_DIR) and on synthetic series with known structure
   (daily seasonality + noise + trend): MASE per horizon step against seasonal-naive and naive
   forecasts of the same targets, sMAPE, and the empirical coverage of the issued 80 % / 95 %
   bands. Optionally River's HoltWinters on the same series as a reference point model.
2. Cost per forecaster: bytes of state and microseconds per update.
3. Scaling on a synthetic fleet: minutes over capacity and idle capacity of the predictive
   `ScalingPolicy` against a reactive HPA-like threshold policy, same fleet, same seed.

Results are printed and written to `bench/results/forecast.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from river import metrics

from models.forecasting import IntervalForecaster, level_key

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "forecast.json"
STEP = 300.0  # seconds between samples (NAB AWS data and our synthetic data)
SEASON = 288  # samples per day at 5 minutes
HORIZON = 12
LEVELS = (0.8, 0.95)


# ---------------------------------------------------------------------------- data
def nab_dir() -> Path:
    return Path(os.environ.get("NOVACRON_NAB_DIR", ROOT.parent / "shared" / "nab-dev"))


def load_nab_series() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """EC2 CPU and network series: name -> (epoch seconds, values)."""
    folder = nab_dir() / "data" / "realAWSCloudwatch"
    series = {}
    if not folder.is_dir():
        return series
    for path in sorted(folder.glob("*.csv")):
        name = path.stem
        if not (name.startswith(("ec2_cpu", "ec2_network")) or "NetworkIn" in name):
            continue
        ts, vals = [], []
        with path.open() as fh:
            for row in csv.DictReader(fh):
                stamp = datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                ts.append(stamp.timestamp())
                vals.append(float(row["value"]))
        series[name] = (np.asarray(ts), np.asarray(vals))
    return series


def synthetic_series(seed: int = 7, days: int = 10) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Daily seasonality + noise + trend with known truth, at 5-minute steps."""
    rng = np.random.default_rng(seed)
    n = days * SEASON
    t = np.arange(n)
    ts = 1.7e9 + STEP * t
    day = 2 * np.pi * t / SEASON
    out = {}
    specs = [
        ("synth_cpu_daily", 40.0, 15.0, 3.0, 0.002),
        ("synth_net_daily_noisy", 5e6, 2e6, 8e5, 200.0),
        ("synth_mem_trend", 50.0, 5.0, 1.0, 0.004),
    ]
    for name, base, amp, noise, slope in specs:
        shape = np.sin(day) + 0.3 * np.sin(2 * day + 1.0)
        ar = np.zeros(n)
        eps = rng.normal(0.0, noise, n)
        for i in range(1, n):  # AR(1) noise, as real utilisation is autocorrelated
            ar[i] = 0.5 * ar[i - 1] + eps[i]
        out[name] = (ts, base + amp * shape + ar + slope * t)
    return out


# ---------------------------------------------------------------------------- forecasts
def evaluate_series(ts: np.ndarray, y: np.ndarray, warmup: int, river_hw: bool) -> dict:
    """Run one forecaster over a series; score every issued forecast after `warmup` samples."""
    n = y.size
    f = IntervalForecaster(horizon=HORIZON, levels=LEVELS)
    abs_err = np.zeros(HORIZON)
    abs_sn = np.zeros(HORIZON)
    abs_nv = np.zeros(HORIZON)
    abs_hw = np.zeros(HORIZON)
    abs_sn_hw = np.zeros(HORIZON)  # seasonal-naive over the points HoltWinters forecast
    late_err = np.zeros(HORIZON)  # after the first three days (season detected by then)
    late_sn = np.zeros(HORIZON)
    count = np.zeros(HORIZON)
    covered = np.zeros((HORIZON, len(LEVELS)))
    # interval score (Gneiting & Raftery 2007): width plus 2 / (1 - level) times any miss
    interval_score = np.zeros((HORIZON, len(LEVELS)))
    width = np.zeros((HORIZON, len(LEVELS)))
    smape = [metrics.SMAPE() for _ in range(HORIZON)]
    hw = None
    if river_hw:
        from river import time_series

        hw = time_series.HoltWinters(alpha=0.3, beta=0.01, gamma=0.15, seasonality=SEASON)
    for i in range(n):
        f.learn_one(float(y[i]), float(ts[i]))
        if hw is not None:
            hw.learn_one(float(y[i]))
        if i < warmup or i + 1 >= n:
            continue
        points = f.forecast()
        hw_path = hw.forecast(HORIZON) if hw is not None and i >= 2 * SEASON else None
        for p in points:
            j = i + p.step
            if j >= n:
                break
            k = p.step - 1
            truth = float(y[j])
            err = abs(truth - p.yhat)
            sn_err = abs(truth - y[j - SEASON]) if j >= SEASON else abs(truth - y[i])
            abs_err[k] += err
            abs_nv[k] += abs(truth - y[i])
            abs_sn[k] += sn_err
            if i >= 3 * SEASON:
                late_err[k] += err
                late_sn[k] += sn_err
            if hw_path is not None:
                abs_hw[k] += abs(truth - hw_path[k])
                abs_sn_hw[k] += sn_err
            smape[k].update(truth, p.yhat)
            count[k] += 1
            for li, lvl in enumerate(LEVELS):
                low, high = p.lower[lvl], p.upper[lvl]
                covered[k, li] += low <= truth <= high
                miss = max(low - truth, 0.0) + max(truth - high, 0.0)
                width[k, li] += high - low
                interval_score[k, li] += high - low + 2.0 / (1.0 - lvl) * miss
    with np.errstate(invalid="ignore", divide="ignore"):
        res = {
            "n": int(n),
            "period_detected": f.period,
            "mase_snaive": (abs_err / abs_sn).tolist(),
            "mase_naive": (abs_err / abs_nv).tolist(),
            "mase_snaive_after_3_days": (late_err / late_sn).tolist(),
            "smape": [m.get() for m in smape],
            "coverage": {
                level_key(lvl): (covered[:, li] / count).tolist() for li, lvl in enumerate(LEVELS)
            },
            # scaled like MASE/naive: by the naive forecasts' mean absolute error of each step
            "msis": {
                level_key(lvl): (interval_score[:, li] / abs_nv).tolist()
                for li, lvl in enumerate(LEVELS)
            },
            "scaled_width": {
                level_key(lvl): (width[:, li] / abs_nv).tolist() for li, lvl in enumerate(LEVELS)
            },
            "online_accuracy": f.accuracy(),
        }
        if hw is not None:
            res["river_hw_mase_snaive"] = (abs_hw / abs_sn_hw).tolist()
    return res


def forecast_bench(river_hw: bool, quick: bool) -> dict:
    out: dict = {"nab": {}, "synthetic": {}}
    nab = load_nab_series()
    if not nab:
        print(f"NAB data not found under {nab_dir()}; skipping real series", file=sys.stderr)
    groups = {"nab": nab, "synthetic": synthetic_series()}
    for group, series in groups.items():
        for name, (ts, y) in series.items():
            if quick:
                ts, y = ts[: 5 * SEASON], y[: 5 * SEASON]
            started = time.perf_counter()
            out[group][name] = evaluate_series(ts, y, warmup=SEASON, river_hw=river_hw)
            out[group][name]["seconds"] = round(time.perf_counter() - started, 2)
        out[group + "_summary"] = summarise(out[group])
    return out


def summarise(per_series: dict) -> dict:
    """Mean over series per step (geometric mean for the MASE ratios)."""
    if not per_series:
        return {}

    def geometric(values: list) -> list[float]:
        arr = np.array(values, dtype=np.float64)
        arr = np.where(np.isfinite(arr) & (arr > 0), arr, np.nan)
        return np.exp(np.nanmean(np.log(arr), axis=0)).tolist()

    def gmean(key: str) -> list[float]:
        return geometric([r[key] for r in per_series.values() if key in r])

    def gmean_levels(key: str, level: str) -> list[float]:
        return geometric([r[key][level] for r in per_series.values()])

    def amean(values: list[list[float]]) -> list[float]:
        return np.nanmean(np.array(values, dtype=np.float64), axis=0).tolist()

    rows = list(per_series.values())
    summary = {
        "series": len(rows),
        "mase_snaive": gmean("mase_snaive"),
        "mase_naive": gmean("mase_naive"),
        "mase_snaive_after_3_days": gmean("mase_snaive_after_3_days"),
        "smape": amean([r["smape"] for r in rows]),
        "coverage": {key: amean([r["coverage"][key] for r in rows]) for key in rows[0]["coverage"]},
        "msis": {key: gmean_levels("msis", key) for key in rows[0]["msis"]},
        "scaled_width": {key: gmean_levels("scaled_width", key) for key in rows[0]["scaled_width"]},
    }
    if "river_hw_mase_snaive" in rows[0]:
        summary["river_hw_mase_snaive"] = gmean("river_hw_mase_snaive")
    return summary


def print_forecast_table(title: str, summary: dict) -> None:
    if not summary:
        return
    print(f"\n{title} ({summary['series']} series; MASE = geometric mean over series)")
    has_hw = "river_hw_mase_snaive" in summary
    header = f"{'h':>3} {'MASE/snaive':>12} {'(after 3d)':>10} {'MASE/naive':>11} {'sMAPE%':>8}"
    header += "".join(f" {'cov' + k:>7}" for k in summary["coverage"])
    header += f" {'HW/snaive':>10}" if has_hw else ""
    print(header)
    for k in range(HORIZON):
        line = f"{k + 1:>3} {summary['mase_snaive'][k]:>12.3f}"
        line += f" {summary['mase_snaive_after_3_days'][k]:>10.3f}"
        line += f" {summary['mase_naive'][k]:>11.3f}"
        line += f" {summary['smape'][k]:>8.2f}"
        line += "".join(f" {100 * v[k]:>6.1f}%" for v in summary["coverage"].values())
        line += f" {summary['river_hw_mase_snaive'][k]:>10.3f}" if has_hw else ""
        print(line)
    mean_cov = {k: 100 * float(np.mean(v)) for k, v in summary["coverage"].items()}
    print(
        f"mean MASE/snaive {np.mean(summary['mase_snaive']):.3f}  "
        f"max {np.max(summary['mase_snaive']):.3f}  "
        + "  ".join(f"coverage {k}%: {v:.1f}%" for k, v in mean_cov.items())
    )
    print(
        "interval score (MSIS, scaled by naive MAE; lower is better): "
        + "  ".join(f"{k}% {np.mean(v):.3f}" for k, v in summary["msis"].items())
        + "  scaled width: "
        + "  ".join(f"{k}% {np.mean(v):.3f}" for k, v in summary["scaled_width"].items())
    )


# ---------------------------------------------------------------------------- cost
def cost_bench(n_forecasters: int = 200, step_seconds: float = STEP, days: int = 3) -> dict:
    """Bytes of state per forecaster (tracemalloc) and microseconds per update, on `days` of a
    daily sine plus noise sampled every `step_seconds` (the daily season is found on the way)."""
    season = int(86_400 / step_seconds)
    samples = days * season
    rng = np.random.default_rng(1)
    t = np.arange(samples)
    y = 50 + 10 * np.sin(2 * np.pi * t / season) + rng.normal(0, 2, samples)
    # Timing without tracemalloc's overhead. This also fills what every forecaster shares
    # (the seasonal curve's fitting matrix, lazily imported modules), so that the traced
    # bytes below are the forecasters' own.
    probe = IntervalForecaster()
    started = time.perf_counter()
    for i in range(samples):
        probe.learn_one(float(y[i]), 1.7e9 + step_seconds * i)
    us_update = 1e6 * (time.perf_counter() - started) / samples
    started = time.perf_counter()
    for _ in range(200):
        probe.forecast()
    us_forecast = 1e6 * (time.perf_counter() - started) / 200
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    fleet = [IntervalForecaster() for _ in range(n_forecasters)]
    started = time.perf_counter()
    for i in range(samples):
        ts = 1.7e9 + step_seconds * i
        for f in fleet:
            f.learn_one(float(y[i]), ts)
    elapsed = time.perf_counter() - started
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    traced = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return {
        "step_seconds": step_seconds,
        "samples": samples,
        "period_found": probe.period,
        "forecasters": n_forecasters,
        "bytes_per_forecaster": int(traced / n_forecasters),
        "numpy_state_bytes": fleet[0].nbytes,
        "us_per_update": round(us_update, 1),
        "us_per_forecast": round(us_forecast, 1),
        "us_per_update_under_tracemalloc": round(1e6 * elapsed / (samples * n_forecasters), 1),
        "projected_mb_for_40k_series": round(40_000 * traced / n_forecasters / 1e6, 1),
    }


# ---------------------------------------------------------------------------- scaling
def fleet_demand(n_vms: int, steps: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """vCPU demand per VM and step, one of five shapes in turn:

    periodic (smooth daily wave), surge (business-hours plateau reached by a 20-minute ramp),
    bursty (random spikes of 15-60 minutes), trending (growth + mild daily wave), steady.
    All with AR(1) noise.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    demand = np.zeros((n_vms, steps))
    kinds = []
    shapes = ("periodic", "surge", "bursty", "trending", "steady")
    for v in range(n_vms):
        kind = shapes[v % len(shapes)]
        base = rng.uniform(2.0, 8.0)
        noise = np.zeros(steps)
        eps = rng.normal(0.0, 0.05 * base, steps)
        for i in range(1, steps):
            noise[i] = 0.6 * noise[i - 1] + eps[i]
        phase = rng.uniform(0, 2 * np.pi)
        if kind == "periodic":
            x = base * (1 + 0.6 * np.sin(2 * np.pi * t / SEASON + phase))
        elif kind == "surge":
            start = int(rng.integers(90, 120))  # 07:30-10:00
            hour = t % SEASON
            ramp = np.clip((hour - start) / 4.0, 0.0, 1.0) * np.clip(
                (start + 120 - hour) / 4.0, 0, 1
            )
            x = base * (1 + rng.uniform(1.5, 2.5) * ramp)
        elif kind == "bursty":
            x = np.full(steps, base)
            for begin in rng.choice(steps - 12, size=steps // 150, replace=False):
                x[begin : begin + rng.integers(3, 12)] += base * rng.uniform(0.8, 2.0)
        elif kind == "trending":
            x = base * (1 + 1.5 * t / steps) * (1 + 0.2 * np.sin(2 * np.pi * t / SEASON + phase))
        else:
            x = np.full(steps, base)
        demand[v] = np.maximum(x + noise, 0.05)
        kinds.append(kind)
    return demand, kinds


class ReactivePolicy:
    """HPA-like: desired = ceil(alloc * utilisation / target), 10 % tolerance, immediate scale-up,
    scale-down to the largest recommendation of the last `window` seconds."""

    def __init__(self, target: float, window: float, lo: float, hi: float) -> None:
        self.target, self.window, self.lo, self.hi = target, window, lo, hi
        self.recs: dict[int, list[tuple[float, float]]] = {}

    def desired(self, vm: int, now: float, alloc: float, usage: float) -> float:
        ratio = usage / alloc / self.target
        want = alloc if abs(ratio - 1.0) <= 0.1 else math.ceil(alloc * ratio - 1e-9)
        want = min(self.hi, max(self.lo, want))
        recs = [r for r in self.recs.get(vm, []) if r[0] > now - self.window] + [(now, want)]
        self.recs[vm] = recs
        return want if want >= alloc else max(w for _, w in recs)


PREDICTIVE = {
    "up_threshold": 0.9,
    "down_threshold": 0.6,
    "target_utilisation": 0.8,
    "level": 0.8,
    "stabilisation_window": 1800.0,
    "cooldown_down": 1800.0,
}


def simulate_fleet(
    demand: np.ndarray,
    policy_name: str,
    warmup: int,
    lag: int,
    settings: dict | None = None,
    kinds: list[str] | None = None,
) -> dict:
    """Run one policy over the fleet; usage seen is demand capped at the allocation."""
    from models.scaling import ResourceLimits, ResourceView, ScalingConfig, ScalingPolicy, VMView

    n_vms, steps = demand.shape
    lo, hi = 1.0, 64.0
    alloc = np.ceil(demand[:, 0] / 0.6)
    pending: list[tuple[int, int, float]] = []  # (apply at step, vm, allocation)
    over_minutes = np.zeros(n_vms)
    unserved = np.zeros(n_vms)
    idle = np.zeros(n_vms)
    actions = 0
    if policy_name == "predictive":
        settings = {**PREDICTIVE, **(settings or {})}
        cfg = ScalingConfig(
            cooldown_up=lag * STEP, limits={"vcpu": ResourceLimits(lo, hi, 1)}, **settings
        )
        policy = ScalingPolicy(cfg)
        forecasters = [IntervalForecaster(horizon=HORIZON, levels=LEVELS) for _ in range(n_vms)]
    else:
        reactive = ReactivePolicy(target=0.6, window=300.0, lo=lo, hi=hi)
    for i in range(steps):
        now = 1.7e9 + STEP * i
        for _, v, a in [p for p in pending if p[0] == i]:
            alloc[v] = a
        pending = [p for p in pending if p[0] > i]
        d = demand[:, i]
        usage = np.minimum(d, alloc)
        if i >= warmup:
            over = d > alloc + 1e-9
            over_minutes += over * STEP / 60
            unserved += np.maximum(d - alloc, 0) * STEP / 60
            idle += np.maximum(alloc - d, 0) * STEP / 60
        queued = {v for _, v, _ in pending}
        if policy_name == "predictive":
            views = []
            for v in range(n_vms):
                forecasters[v].learn_one(float(usage[v]), now)
                pts = forecasters[v].forecast()
                view = ResourceView(
                    allocation=float(alloc[v]),
                    usage=float(usage[v]),
                    forecast=[p.yhat for p in pts],
                    upper=[p.upper[cfg.level] for p in pts],
                )
                views.append(VMView(f"vm-{v}", "host", {"vcpu": view}))
            for act in policy.decide(now, [views[v] for v in range(n_vms) if v not in queued]):
                v = int(act["vm_id"].split("-")[1])
                pending.append((i + lag, v, act["target_allocation"]))
                actions += i >= warmup
        else:
            for v in range(n_vms):
                if v in queued:
                    continue
                want = reactive.desired(v, now, float(alloc[v]), float(usage[v]))
                if want != alloc[v]:
                    pending.append((i + lag, v, want))
                    actions += i >= warmup
    out = {
        "minutes_over_capacity": round(float(over_minutes.sum()), 1),
        "unserved_vcpu_minutes": round(float(unserved.sum()), 1),
        "idle_vcpu_minutes": round(float(idle.sum()), 1),
        "actions": int(actions),
    }
    if kinds is not None:
        out["by_pattern"] = {
            kind: {
                "minutes_over_capacity": round(float(over_minutes[mask].sum()), 1),
                "idle_vcpu_minutes": round(float(idle[mask].sum()), 1),
            }
            for kind in sorted(set(kinds))
            for mask in [np.array([k == kind for k in kinds])]
        }
    return out


def fleet_bench(quick: bool, seed: int = 11) -> dict:
    n_vms = 10 if quick else 40
    days = 4 if quick else 6
    warmup = 2 * SEASON
    lag = 2  # a resize takes effect two samples (10 minutes) after the decision
    demand, kinds = fleet_demand(n_vms, days * SEASON, seed)
    out = {"vms": n_vms, "days": days, "measured_days": days - 2, "resize_lag_minutes": 10,
           "seed": seed}  # fmt: skip
    for name in ("reactive", "predictive"):
        started = time.perf_counter()
        out[name] = simulate_fleet(demand, name, warmup, lag, kinds=kinds)
        out[name]["seconds"] = round(time.perf_counter() - started, 1)
    return out


def print_fleet_table(res: dict) -> None:
    print(
        f"\nscaling on a synthetic fleet ({res['vms']} VMs, {res['measured_days']} measured days, "
        f"resize lag {res['resize_lag_minutes']} min, seed {res['seed']})"
    )
    cols = ("minutes_over_capacity", "unserved_vcpu_minutes", "idle_vcpu_minutes", "actions")
    print(f"{'policy':<12}" + "".join(f"{c:>24}" for c in cols))
    for name in ("reactive", "predictive"):
        print(f"{name:<12}" + "".join(f"{res[name][c]:>24}" for c in cols))


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forecast", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 days per series, small fleet")
    parser.add_argument("--no-fleet", action="store_true", help="skip the scaling simulation")
    parser.add_argument("--no-river", action="store_true", help="skip River HoltWinters")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)

    results: dict = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds")}
    results["forecast"] = forecast_bench(river_hw=not args.no_river, quick=args.quick)
    print_forecast_table("NAB EC2 CPU + network", results["forecast"].get("nab_summary", {}))
    print_forecast_table(
        "Synthetic daily + noise + trend", results["forecast"]["synthetic_summary"]
    )
    for group in ("nab", "synthetic"):
        print(f"\nper series ({group}): period, mean MASE/snaive, coverage 80/95, MSIS 80/95")
        for name, r in results["forecast"][group].items():
            cov = [100 * float(np.nanmean(v)) for v in r["coverage"].values()]
            msis = [float(np.nanmean(v)) for v in r["msis"].values()]
            print(
                f"  {name:<44} {str(r['period_detected']):>5} "
                f"{float(np.nanmean(r['mase_snaive'])):6.3f} {cov[0]:5.1f} {cov[1]:5.1f}"
                f" {msis[0]:6.2f} {msis[1]:6.2f}"
            )

    n = 50 if args.quick else 200
    results["cost"] = [
        cost_bench(n_forecasters=n),
        cost_bench(n_forecasters=n // 4, step_seconds=60.0),  # a day is 1,440 samples
    ]
    for c in results["cost"]:
        print(
            f"\ncost ({c['step_seconds']:g} s samples, period found {c['period_found']}): "
            f"{c['bytes_per_forecaster']} B/forecaster (numpy state {c['numpy_state_bytes']} B), "
            f"{c['us_per_update']} us/update, {c['us_per_forecast']} us/forecast, "
            f"~{c['projected_mb_for_40k_series']} MB for 10k VMs x 4 metrics"
        )

    if not args.no_fleet:
        results["scaling"] = fleet_bench(quick=args.quick)
        print_fleet_table(results["scaling"])

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_jsonable(results), indent=2))
    print(f"\nwrote {args.out}")
    return 0


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


if __name__ == "__main__":
    raise SystemExit(main())
