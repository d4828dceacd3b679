"""The worker's event loop: uvloop by default, the standard library's on request."""

from __future__ import annotations

import asyncio

import pytest

from streams.cli import use_event_loop
from streams.settings import Settings


@pytest.fixture
def restore_policy():
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)


def _new_loop_package() -> str:
    loop = asyncio.new_event_loop()
    try:
        return type(loop).__module__.split(".")[0]
    finally:
        loop.close()


@pytest.mark.usefixtures("restore_policy")
def test_each_choice_runs_the_loops_created_after_it():
    use_event_loop("uvloop")
    assert _new_loop_package() == "uvloop"
    use_event_loop("asyncio")
    assert _new_loop_package() == "asyncio"


@pytest.mark.usefixtures("restore_policy")
def test_an_unknown_loop_is_refused_with_the_choices():
    with pytest.raises(SystemExit, match="'tokio' is not one of uvloop, asyncio"):
        use_event_loop("tokio")


def test_the_setting_defaults_to_uvloop_and_reads_the_environment(monkeypatch):
    monkeypatch.delenv("NOVACRON_EVENT_LOOP", raising=False)
    assert Settings.from_env().event_loop == "uvloop"
    monkeypatch.setenv("NOVACRON_EVENT_LOOP", "asyncio")
    assert Settings.from_env().event_loop == "asyncio"
