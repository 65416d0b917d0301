"""The model executor: one thread that batches the inputs of many callers into model calls."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from workers.executor import ModelExecutor

WAIT = 10  # seconds a test waits for a result before it counts as lost


@pytest.fixture
def executors():
    """Make executors that are stopped after the test."""
    made = []

    def make(**options) -> ModelExecutor:
        executor = ModelExecutor(**options)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.stop()


class Recorder:
    """A model call that records the inputs of each call and doubles them."""

    def __init__(self, fail_on=None):
        self.calls: list[list] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, inputs: list) -> list:
        with self.lock:
            self.calls.append(list(inputs))
        if self.fail_on is not None and self.fail_on in inputs:
            raise ValueError(f"cannot take {self.fail_on}")
        return [item * 2 for item in inputs]


class Gate:
    """A model call that holds the model thread until it is opened, to let inputs pile up."""

    def __init__(self):
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, inputs: list) -> list:
        self.entered.set()
        assert self.opened.wait(WAIT), "the gate was never opened"
        return ["gate"] * len(inputs)

    def hold(self, executor: ModelExecutor):
        future = executor.submit("gate", self, None)
        assert self.entered.wait(WAIT), "the model thread never took the gate"
        return future


def submit_from_threads(executor, stage, call, items, batch_size):
    """Submit each item from a thread of its own, all at once; the futures by item.

    ``stage`` is a stage name, or a function of the item that names its stage.
    """
    futures, lock = {}, threading.Lock()
    barrier = threading.Barrier(len(items))
    stage_of = stage if callable(stage) else lambda _item: stage

    def submit(item):
        barrier.wait()
        future = executor.submit(stage_of(item), call, item, batch_size)
        with lock:
            futures[item] = future

    threads = [threading.Thread(target=submit, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    return futures


def test_inputs_submitted_together_from_several_threads_share_one_call(executors):
    executor = executors(max_wait=5.0)
    model = Recorder()
    started = time.monotonic()

    futures = submit_from_threads(executor, "extract", model, [1, 2, 3, 4], batch_size=4)

    assert {item: f.result(WAIT) for item, f in futures.items()} == {1: 2, 2: 4, 3: 6, 4: 8}
    assert len(model.calls) == 1 and sorted(model.calls[0]) == [1, 2, 3, 4]
    # A full batch goes at once, without waiting out max_wait.
    assert time.monotonic() - started < 4.0


def test_a_call_takes_at_most_batch_size_inputs_and_the_rest_go_in_the_next(executors):
    executor = executors(max_wait=0.05)
    gate, model = Gate(), Recorder()
    held = gate.hold(executor)
    futures = submit_from_threads(executor, "score", model, list(range(1, 7)), batch_size=4)
    gate.opened.set()

    assert {item: f.result(WAIT) for item, f in futures.items()} == {n: 2 * n for n in range(1, 7)}
    assert held.result(WAIT) == "gate"
    assert [len(call) for call in model.calls] == [4, 2]
    assert sorted(model.calls[0] + model.calls[1]) == list(range(1, 7))
    assert executor.calls == 3


def test_a_lone_input_is_called_after_about_max_wait(executors):
    executor = executors(max_wait=0.2)
    model = Recorder()
    started = time.monotonic()

    future = executor.submit("translate", model, 21, batch_size=8)

    assert future.result(WAIT) == 42
    assert time.monotonic() - started < 1.5
    assert model.calls == [[21]]


def test_a_stage_whose_batch_is_due_runs_while_an_older_stage_still_gathers_its_batch(
    executors,
):
    # The device does not idle while a text batch gathers: the render waiting beside it goes.
    executor = executors(max_wait=5.0)
    text, render = Recorder(), Recorder()
    gathering = executor.submit("extract", text, 1, batch_size=8)

    rendered = executor.submit("render", render, 2, batch_size=1)

    assert rendered.result(WAIT) == 4
    assert not gathering.done() and text.calls == []
    assert gathering.result(WAIT) == 2  # after max_wait, alone
    assert text.calls == [[1]]


def test_of_the_stages_due_the_one_whose_oldest_input_came_first_goes_first(executors):
    executor = executors(max_wait=0.0)
    gate, model = Gate(), Recorder()
    gate.hold(executor)
    order = []
    for item, stage in enumerate(("score", "render", "score")):
        executor.submit(stage, model, item, batch_size=4).add_done_callback(
            lambda _f, stage=stage: order.append(stage)
        )
    gate.opened.set()

    deadline = time.monotonic() + WAIT
    while len(order) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert order == ["score", "score", "render"]


def test_inputs_are_served_in_the_order_they_came(executors):
    executor = executors(max_wait=0.0)
    gate, model = Gate(), Recorder()
    gate.hold(executor)
    futures = [executor.submit("translate", model, n, batch_size=2) for n in range(1, 6)]
    gate.opened.set()

    assert [f.result(WAIT) for f in futures] == [2, 4, 6, 8, 10]
    assert model.calls == [[1, 2], [3, 4], [5]]


def test_a_batch_that_fails_is_called_again_one_input_at_a_time_and_only_the_breaker_fails(
    executors, caplog
):
    executor = executors(max_wait=0.05)
    gate, model = Gate(), Recorder(fail_on=2)
    gate.hold(executor)
    futures = [executor.submit("extract", model, n, batch_size=3) for n in (1, 2, 3)]
    with caplog.at_level(logging.WARNING, logger="farm.executor"):
        gate.opened.set()
        assert futures[0].result(WAIT) == 2
        with pytest.raises(ValueError, match="cannot take 2"):
            futures[1].result(WAIT)
        assert futures[2].result(WAIT) == 6

    assert model.calls == [[1, 2, 3], [1], [2], [3]]
    warnings = [r for r in caplog.records if "running them one at a time" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "extract of 3 articles" in warnings[0].getMessage()


def test_a_lone_input_whose_call_fails_gets_the_error_without_a_second_call(executors, caplog):
    executor = executors(max_wait=0.0)
    model = Recorder(fail_on=5)
    with caplog.at_level(logging.WARNING, logger="farm.executor"):
        future = executor.submit("extract", model, 5, batch_size=4)
        with pytest.raises(ValueError, match="cannot take 5"):
            future.result(WAIT)
    assert model.calls == [[5]]
    assert not [r for r in caplog.records if "one at a time" in r.getMessage()]


def test_an_output_that_is_an_exception_fails_only_its_own_input(executors):
    executor = executors(max_wait=0.05)
    gate = Gate()
    calls = []

    def model(inputs):
        calls.append(list(inputs))
        return [MemoryError("too big") if item == "big" else item.upper() for item in inputs]

    gate.hold(executor)
    futures = [executor.submit("render", model, item, batch_size=3) for item in ("a", "big", "c")]
    gate.opened.set()

    assert futures[0].result(WAIT) == "A" and futures[2].result(WAIT) == "C"
    with pytest.raises(MemoryError, match="too big"):
        futures[1].result(WAIT)
    assert calls == [["a", "big", "c"]]


def test_a_call_that_returns_the_wrong_number_of_outputs_fails_each_input_alone(executors):
    executor = executors(max_wait=0.05)
    gate = Gate()
    calls = []

    def model(inputs):
        calls.append(list(inputs))
        return [] if 2 in inputs else [item for item in inputs]

    gate.hold(executor)
    futures = [executor.submit("score", model, n, batch_size=3) for n in (1, 2, 3)]
    gate.opened.set()

    assert futures[0].result(WAIT) == 1 and futures[2].result(WAIT) == 3
    with pytest.raises(RuntimeError, match="returned 0 outputs for 1"):
        futures[1].result(WAIT)
    assert calls == [[1, 2, 3], [1], [2], [3]]


def test_inputs_of_different_stages_never_share_a_call(executors):
    executor = executors(max_wait=0.05)
    gate = Gate()
    seen = []

    def model_of(stage):
        def model(inputs):
            seen.append((stage, list(inputs)))
            return [f"{stage}:{item}" for item in inputs]

        return model

    gate.hold(executor)
    futures = [
        executor.submit(stage, model_of(stage), n, batch_size=8)
        for n, stage in enumerate(["translate", "extract", "translate", "extract", "translate"])
    ]
    gate.opened.set()

    assert [f.result(WAIT) for f in futures] == [
        "translate:0",
        "extract:1",
        "translate:2",
        "extract:3",
        "translate:4",
    ]
    # The stage whose input waited longest goes first.
    assert seen == [("translate", [0, 2, 4]), ("extract", [1, 3])]


def test_a_call_that_outruns_the_time_limit_is_reported_once_with_its_stage_and_inputs(
    executors,
):
    hangs = []
    executor = executors(max_wait=1.0, time_limit=0.3, on_hang=lambda *a: hangs.append(a))

    def slow(inputs):
        time.sleep(1.5)
        return inputs

    futures = [executor.submit("render", slow, n, 2, label=f"token-{n}") for n in (1, 2)]

    assert [f.result(WAIT) for f in futures] == [1, 2]
    assert hangs == [("render", ["token-1", "token-2"])]


def test_a_call_within_the_time_limit_is_not_reported(executors):
    hangs = []
    executor = executors(max_wait=0.0, time_limit=1.0, on_hang=lambda *a: hangs.append(a))
    model = Recorder()
    assert [executor.submit("score", model, n).result(WAIT) for n in range(3)] == [0, 2, 4]
    time.sleep(0.5)
    assert hangs == []


def test_each_call_is_announced_with_its_stage_and_the_labels_of_its_inputs(executors):
    announced = []
    executor = executors(max_wait=0.05, on_call=lambda *a: announced.append(a))
    gate, model = Gate(), Recorder(fail_on=2)
    gate.hold(executor)
    futures = [executor.submit("extract", model, n, 2, label=f"t{n}") for n in (1, 2)]
    gate.opened.set()
    with pytest.raises(ValueError):
        futures[1].result(WAIT)

    assert futures[0].result(WAIT) == 2
    # The batch, then each input alone once the batch failed.
    assert announced == [
        ("gate", [None]),
        ("extract", ["t1", "t2"]),
        ("extract", ["t1"]),
        ("extract", ["t2"]),
    ]


def test_stopping_fails_the_inputs_still_waiting_and_refuses_new_ones(executors):
    executor = executors(max_wait=0.0)
    gate, model = Gate(), Recorder()
    held = gate.hold(executor)
    waiting = executor.submit("translate", model, 1)

    executor.stop()
    gate.opened.set()

    with pytest.raises(RuntimeError, match="stopped"):
        waiting.result(WAIT)
    assert held.result(WAIT) == "gate"  # the call under way finishes
    with pytest.raises(RuntimeError, match="stopped"):
        executor.submit("translate", model, 2)
    time.sleep(0.2)
    assert model.calls == []


def test_a_batch_size_below_one_and_a_negative_max_wait_are_refused(executors):
    with pytest.raises(ValueError, match="max_wait"):
        ModelExecutor(max_wait=-0.1)
    executor = executors(max_wait=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        executor.submit("translate", Recorder(), 1, batch_size=0)


def test_model_calls_never_overlap(executors):
    executor = executors(max_wait=0.01)
    lock = threading.Lock()
    running, most, calls = [0], [0], [0]

    def model(inputs):
        with lock:
            running[0] += 1
            calls[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return inputs

    items = [(stage, n) for n in range(6) for stage in ("translate", "extract", "score")]
    futures = submit_from_threads(executor, lambda item: item[0], model, items, batch_size=2)
    assert {item: f.result(WAIT) for item, f in futures.items()} == {i: i for i in items}
    assert calls[0] >= 9 and most[0] == 1
