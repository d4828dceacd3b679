"""Every runtime setting, read from `NOVACRON_*` environment variables (see the README)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from models.engine import EngineConfig
from models.scaling import ScalingConfig
from streams.capacity import CapacityConfig


class SettingsError(ValueError):
    """An environment variable holds a value of the wrong type."""


def _env(name: str, default: Any, cast: type) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        if cast is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return cast(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a valid {cast.__name__}") from exc


def engine_config_from_env() -> EngineConfig:
    """EngineConfig with each field overridable as NOVACRON_ENGINE_<FIELD>."""
    overrides = {}
    for f in dataclasses.fields(EngineConfig):
        cast = (
            f.type
            if isinstance(f.type, type)
            else {"float": float, "int": int, "bool": bool, "str": str}.get(f.type)
        )
        if cast is None:
            continue
        name = f"NOVACRON_ENGINE_{f.name.upper()}"
        if name in os.environ:
            overrides[f.name] = _env(name, None, cast)
    return EngineConfig(**overrides)


def capacity_config_from_env() -> CapacityConfig:
    """Forecast and scaling settings (NOVACRON_FORECAST_*, NOVACRON_SCALING_*, NOVACRON_HOST_*)."""
    d, s = CapacityConfig(), ScalingConfig()
    levels = _env("NOVACRON_FORECAST_LEVELS", None, str)
    scaling = ScalingConfig(
        up_threshold=_env("NOVACRON_SCALING_UP_THRESHOLD", s.up_threshold, float),
        down_threshold=_env("NOVACRON_SCALING_DOWN_THRESHOLD", s.down_threshold, float),
        target_utilisation=_env("NOVACRON_SCALING_TARGET", s.target_utilisation, float),
        stabilisation_window=_env(
            "NOVACRON_SCALING_STABILISATION_S", s.stabilisation_window, float
        ),
        cooldown_up=_env("NOVACRON_SCALING_COOLDOWN_UP_S", s.cooldown_up, float),
        cooldown_down=_env("NOVACRON_SCALING_COOLDOWN_DOWN_S", s.cooldown_down, float),
        host_saturation=_env("NOVACRON_SCALING_HOST_SATURATION", s.host_saturation, float),
        mode=_env("NOVACRON_SCALING_MODE", "recommend", str),  # trial first: say, don't act
    )
    return CapacityConfig(
        horizon=_env("NOVACRON_FORECAST_HORIZON", d.horizon, int),
        levels=tuple(float(x) for x in levels.split(",")) if levels else d.levels,
        forecast_every=_env("NOVACRON_FORECAST_EVERY", d.forecast_every, int),
        act_after_windows=_env("NOVACRON_SCALING_ACT_AFTER_WINDOWS", d.act_after_windows, int),
        default_allocation={
            "vcpu": _env("NOVACRON_DEFAULT_VCPUS", d.default_allocation["vcpu"], float),
            "memory": _env("NOVACRON_DEFAULT_MEM_MIB", d.default_allocation["memory"], float),
            "bandwidth": _env(
                "NOVACRON_DEFAULT_NET_MBPS", d.default_allocation["bandwidth"], float
            ),
        },
        host_capacity={
            "vcpu": _env("NOVACRON_HOST_VCPUS", d.host_capacity["vcpu"], float),
            "memory": _env("NOVACRON_HOST_MEM_MIB", d.host_capacity["memory"], float),
            "bandwidth": _env("NOVACRON_HOST_NET_MBPS", d.host_capacity["bandwidth"], float),
        },
        scaling=scaling,
    )


@dataclass(frozen=True)
class Settings:
    """Worker settings; `Settings.from_env()` is the only constructor the CLI uses."""

    broker: str = "kafka://127.0.0.1:9092"
    app_id: str = "novacron-stream"
    store: str = "memory://"
    # Faust's check, when a worker takes partitions on with rocksdb://, that the offset its
    # local table files reached is not past the changelog's end. Leave it on against Apache
    # Kafka; the embedded broker under-reports a partition's end offset (ListOffsets "latest"
    # lags the log after multi-record batches), which trips it for no lost data.
    recovery_consistency_check: bool = True
    data_dir: str = "novacron-data"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    topics_file: str | None = None
    topic_prefix: str = ""
    session_timeout_s: float = 10.0
    heartbeat_interval_s: float = 2.0
    max_record_bytes: int = 1_048_576
    max_batch_samples: int = 10_000
    max_clock_skew_s: float = 86_400.0
    log_level: str = "info"
    checkpoint_every: int = 100
    # forecast windows a VM learns between two checkpoints of its forecasting state (60: an
    # hour of one-minute windows; the state is tens of KB, so it is written less often)
    forecast_checkpoint_every: int = 60
    # the embedded broker holds a fetch for its whole wait when no data is there: 50 ms took
    # about 40 % off the median time to an alert at half load, against 100 ms
    # (docs/benchmarks.md)
    fetch_max_wait_ms: int = 50
    # a backlog fills an engine call up to take_max records or take_max_bytes of them: 1,000
    # single-sample records (about 240 KB), or some 170 records of 100 samples; while fewer
    # than take_max records wait, up to take_max_shallow (docs/benchmarks.md, "Larger engine
    # calls from a backlog")
    take_max: int = 1_000
    take_max_bytes: int = 4 * 1_048_576
    take_max_shallow: int = 200
    take_within_s: float = 0.02
    # how long the first record of a batch waits while further records are known to be waiting
    # behind it (a backlog): the batch fills up to take_max instead (see streams/batching.py)
    take_backlog_within_s: float = 0.1
    # a batch of records this large goes to the engine as soon as no further record is waiting
    # (one record of ~70 samples or more; see streams/batching.py)
    take_ready_bytes: int = 16_384
    forecast_window_s: float = 60.0
    window_grace_s: float = 10.0
    capacity: CapacityConfig = field(default_factory=CapacityConfig)
    feedback_token: str | None = None  # POST /feedback is disabled while unset
    max_body_bytes: int = 16_384
    history_series_vms: int = 2_000
    history_samples: int = 240
    forecast_top_n: int = 10
    # Allocations between young-generation garbage collections (Python's default is 700). The
    # worker allocates short-lived objects by the thousand per batch and keeps few cycles, so
    # collecting that often costs throughput for nothing.
    gc_gen0_threshold: int = 50_000
    # Blocks of at least this many bytes get memory mapped for themselves, returned to the
    # system when freed (0: glibc's own, dynamic threshold; see streams.cli.map_large_blocks).
    mmap_threshold: int = 1 << 20
    # The worker's asyncio event loop: "uvloop" (libuv, the default) or "asyncio" (the
    # standard library's). Faust's per-record path is mostly event-loop work.
    event_loop: str = "uvloop"
    engine: EngineConfig = field(default_factory=EngineConfig)

    @classmethod
    def from_env(cls) -> Settings:
        d = cls()
        return cls(
            broker=_env("NOVACRON_BROKER", d.broker, str),
            app_id=_env("NOVACRON_APP_ID", d.app_id, str),
            store=_env("NOVACRON_STORE", d.store, str),
            recovery_consistency_check=_env(
                "NOVACRON_RECOVERY_CONSISTENCY_CHECK", d.recovery_consistency_check, bool
            ),
            data_dir=_env("NOVACRON_DATA_DIR", d.data_dir, str),
            web_host=_env("NOVACRON_WEB_HOST", d.web_host, str),
            web_port=_env("NOVACRON_WEB_PORT", d.web_port, int),
            topics_file=_env("NOVACRON_TOPICS_FILE", d.topics_file, str),
            topic_prefix=_env("NOVACRON_TOPIC_PREFIX", d.topic_prefix, str),
            session_timeout_s=_env("NOVACRON_SESSION_TIMEOUT_S", d.session_timeout_s, float),
            heartbeat_interval_s=_env(
                "NOVACRON_HEARTBEAT_INTERVAL_S", d.heartbeat_interval_s, float
            ),
            max_record_bytes=_env("NOVACRON_MAX_RECORD_BYTES", d.max_record_bytes, int),
            max_batch_samples=_env("NOVACRON_MAX_BATCH_SAMPLES", d.max_batch_samples, int),
            max_clock_skew_s=_env("NOVACRON_MAX_CLOCK_SKEW_S", d.max_clock_skew_s, float),
            log_level=_env("NOVACRON_LOG_LEVEL", d.log_level, str),
            checkpoint_every=_env("NOVACRON_CHECKPOINT_EVERY", d.checkpoint_every, int),
            forecast_checkpoint_every=_env(
                "NOVACRON_FORECAST_CHECKPOINT_EVERY", d.forecast_checkpoint_every, int
            ),
            fetch_max_wait_ms=_env("NOVACRON_FETCH_MAX_WAIT_MS", d.fetch_max_wait_ms, int),
            take_max=_env("NOVACRON_TAKE_MAX", d.take_max, int),
            take_max_bytes=_env("NOVACRON_TAKE_MAX_BYTES", d.take_max_bytes, int),
            take_max_shallow=_env("NOVACRON_TAKE_MAX_SHALLOW", d.take_max_shallow, int),
            take_within_s=_env("NOVACRON_TAKE_WITHIN_S", d.take_within_s, float),
            take_backlog_within_s=_env(
                "NOVACRON_TAKE_BACKLOG_WITHIN_S", d.take_backlog_within_s, float
            ),
            take_ready_bytes=_env("NOVACRON_TAKE_READY_BYTES", d.take_ready_bytes, int),
            feedback_token=_env("NOVACRON_FEEDBACK_TOKEN", d.feedback_token, str),
            max_body_bytes=_env("NOVACRON_MAX_BODY_BYTES", d.max_body_bytes, int),
            history_series_vms=_env("NOVACRON_HISTORY_SERIES_VMS", d.history_series_vms, int),
            history_samples=_env("NOVACRON_HISTORY_SAMPLES", d.history_samples, int),
            forecast_top_n=_env("NOVACRON_FORECAST_TOP_N", d.forecast_top_n, int),
            gc_gen0_threshold=_env("NOVACRON_GC_GEN0_THRESHOLD", d.gc_gen0_threshold, int),
            mmap_threshold=_env("NOVACRON_MMAP_THRESHOLD", d.mmap_threshold, int),
            event_loop=_env("NOVACRON_EVENT_LOOP", d.event_loop, str),
            forecast_window_s=_env("NOVACRON_FORECAST_WINDOW_S", d.forecast_window_s, float),
            window_grace_s=_env("NOVACRON_WINDOW_GRACE_S", d.window_grace_s, float),
            capacity=capacity_config_from_env(),
            engine=engine_config_from_env(),
        )

    @property
    def bootstrap(self) -> str:
        """The broker URL as a kafka-python bootstrap string (host:port[,host:port])."""
        return ",".join(part.split("://", 1)[-1] for part in self.broker.split(";"))
