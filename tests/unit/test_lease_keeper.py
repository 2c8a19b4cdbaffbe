"""The lease keeper of a pipelined worker holds several batches: each released on its
own, all handed back together when one passes its time limit or the shutdown grace."""

from __future__ import annotations

import pytest

from schemas.settings import WorkerSettings
from worker.lease import EX_TEMPFAIL, LeaseKeeper

pytestmark = pytest.mark.unit


class Recorder:
    def __init__(self) -> None:
        self.handed: list[dict[str, int]] = []
        self.exits: list[int] = []

    def keeper(self, **timings: float) -> LeaseKeeper:
        settings = WorkerSettings(database_url="sqlite://", captioner_model="captionq/noop",
                                  **timings)  # fmt: skip
        keeper = LeaseKeeper(settings, hand_back=lambda jobs: self.handed.append(dict(jobs)),
                             exit_process=self.exits.append)  # fmt: skip
        keeper.start = lambda: None  # type: ignore[method-assign]  # the test ticks it
        return keeper


def test_batches_are_held_and_released_each_on_its_own() -> None:
    keeper = Recorder().keeper()
    first, second = keeper.hold({"a": 1, "b": 1}), keeper.hold({"c": 2})
    assert keeper.held == 3
    keeper.release(first)
    assert keeper.held == 1
    keeper.release(first)  # twice is harmless
    keeper.release(second)
    assert keeper.held == 0


def test_past_the_shutdown_grace_every_batch_in_hand_is_handed_back() -> None:
    record = Recorder()
    keeper = record.keeper(shutdown_grace_s=1e-9)
    keeper.hold({"a": 1, "b": 2})
    keeper.hold({"c": 1, "d": 1})
    assert not keeper.shutting_down
    keeper.begin_shutdown()
    assert keeper.shutting_down
    keeper._tick()
    assert record.handed == [{"a": 1, "b": 2, "c": 1, "d": 1}]  # each as its claim made it
    assert record.exits == [EX_TEMPFAIL]


def test_one_batch_past_its_time_limit_hands_back_all_of_them() -> None:
    record = Recorder()
    keeper = record.keeper(batch_time_limit_s=1e-9)
    keeper.hold({"a": 1})
    keeper.hold({"b": 3})
    keeper._tick()
    assert record.handed == [{"a": 1, "b": 3}]
    assert record.exits == [EX_TEMPFAIL]
