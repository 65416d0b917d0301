"""One thread per process that makes every model call, batching the inputs that wait.

A worker process holds several messages at once; each message's thread hands its article's
model input to :meth:`ModelExecutor.submit` and waits for the result. The executor takes the
inputs waiting for one stage (up to that stage's batch size, waiting at most ``max_wait``
seconds for more once the first has come, and meanwhile calling any other stage whose batch
is due), runs one model call over them, and hands each caller its own output: a dynamic
batcher, as inference servers have. Model calls never run side by side, so one device serves
one call at a time, while the callers' threads do their own work (a PNG written, a row
stored) around it.

A call that fails for a batch of several inputs is made again for each input alone, so one
input that breaks the model fails on its own. A call that runs longer than ``time_limit`` is
reported to ``on_hang`` by a watchdog: a thread cannot be stopped from outside, so the
process's owner decides (the farm's worker frees its articles and exits).

:meth:`ModelExecutor.stop` with ``cancel`` (Ctrl-C in ``farm run``) ends the callers' waits
with :class:`ExecutorStopped`, which no stage takes for an error of its article, and
:meth:`ModelExecutor.join` waits for the call in progress: no thread is left in a model call
when the interpreter ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

logger = logging.getLogger("farm.executor")

ModelCall = Callable[[list], list]


class ExecutorStopped(BaseException):  # noqa: N818  (named as KeyboardInterrupt is)
    """The process is stopping: this input's model call will not be made.

    A BaseException, as KeyboardInterrupt is: it is no error of the article, so a stage's
    error handling (which catches Exception to retry or fail the article) lets it through,
    and the article stays as it was claimed until its owner frees it.
    """


@dataclass
class _Waiting:
    call: ModelCall
    batch_size: int
    items: deque = field(default_factory=deque)  # (arrived, input, future, label)


class ModelExecutor:
    """The model-call thread of one process.

    Args:
        max_wait: seconds to wait for more inputs of a stage once one has come.
        time_limit: seconds one model call may run before ``on_hang`` is called.
        on_hang: called once, from the watchdog thread, with the stage and the labels of
            the inputs of a call that outran ``time_limit``.
        on_call: called on the model thread right before each call, with the stage and the
            labels of its inputs (a record of what was running, should the process die).
    """

    def __init__(
        self,
        max_wait: float = 0.02,
        time_limit: float | None = None,
        on_hang: Callable[[str, list], None] | None = None,
        on_call: Callable[[str, list], None] | None = None,
    ) -> None:
        if max_wait < 0:
            raise ValueError("max_wait must not be negative")
        self.max_wait = max_wait
        self.time_limit = time_limit
        self.on_hang = on_hang
        self.on_call = on_call
        self.calls = 0  # model calls made, for benchmarks and logs
        self._stages: dict[str, _Waiting] = {}
        self._ready = threading.Condition()
        self._running: tuple[str, float, list] | None = None  # stage, started, labels
        self._stopped = False
        self._cancelled = False
        self._stopping = threading.Event()  # wakes the watchdog at once
        self._thread = threading.Thread(target=self._serve, name="farm-model", daemon=True)
        self._thread.start()
        self._watchdog = None
        if time_limit:
            self._watchdog = threading.Thread(target=self._watch, name="farm-watchdog", daemon=True)
            self._watchdog.start()

    def submit(self, stage: str, call: ModelCall, item, batch_size: int = 1, label=None) -> Future:
        """Queue one input for ``stage``'s model call.

        Args:
            stage: the stage's name; inputs of one stage share calls.
            call: the model call, a list of inputs to a list of outputs in order (an output
                may be an exception instance, which fails that input alone).
            item: this caller's input.
            batch_size: the most inputs one call of this stage may take.
            label: names this input to ``on_call`` and ``on_hang``.

        Returns:
            A future of this input's output.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        future: Future = Future()
        with self._ready:
            if self._cancelled:
                raise ExecutorStopped()
            if self._stopped:
                raise RuntimeError("the model executor is stopped")
            waiting = self._stages.setdefault(stage, _Waiting(call, batch_size))
            waiting.call, waiting.batch_size = call, batch_size
            waiting.items.append((time.monotonic(), item, future, label))
            self._ready.notify()
        return future

    def stop(self, cancel: bool = False) -> None:
        """Stop taking inputs; the call in progress, if any, still ends as usual.

        Args:
            cancel: the process is stopping (Ctrl-C): inputs still waiting, and any
                submitted from now on, end with :class:`ExecutorStopped`, which is no
                error of theirs. Otherwise they fail with ``RuntimeError``.
        """
        with self._ready:
            self._stopped, self._cancelled = True, self._cancelled or cancel
            left = [entry for w in self._stages.values() for entry in w.items]
            for waiting in self._stages.values():
                waiting.items.clear()
            self._ready.notify_all()
        self._stopping.set()
        for _, _, future, _ in left:
            if cancel:
                future.set_exception(ExecutorStopped())
            else:
                future.set_exception(RuntimeError("the model executor stopped"))

    def join(self, timeout: float | None = None) -> bool:
        """Wait, after :meth:`stop`, for the model thread to end its call and the watchdog.

        Args:
            timeout: the most seconds to wait in all; None waits as long as the call runs.

        Returns:
            Whether both threads have ended.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in (self._thread, self._watchdog):
            if thread is not None:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t is not None and t.is_alive() for t in (self._thread, self._watchdog))

    def _serve(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            stage, call, entries = taken
            try:
                self._run(stage, call, entries)
            except BaseException as error:  # the thread must outlive anything a call does
                logger.exception("%s: the model thread caught %s", stage, type(error).__name__)
                for entry in entries:
                    if not entry[2].done():
                        entry[2].set_exception(RuntimeError(f"{stage} call broke: {error}"))

    def _take(self) -> tuple[str, ModelCall, list] | None:
        with self._ready:
            while not self._stopped:
                now = time.monotonic()
                stage, wake_at = self._due(now)
                if stage is None:
                    self._ready.wait(None if wake_at is None else wake_at - now)
                    continue
                waiting = self._stages[stage]
                count = min(waiting.batch_size, len(waiting.items))
                entries = [waiting.items.popleft() for _ in range(count)]
                return stage, waiting.call, entries
            return None

    def _due(self, now: float) -> tuple[str | None, float | None]:
        """The stage to call now, and else when the next one is due.

        A stage is due when its batch is full or its oldest input has waited ``max_wait``;
        of the due stages, the one whose oldest input came first goes. A stage still
        gathering its batch never keeps the device idle while another one is due (a render,
        whose batch is one image, runs while the next text batch gathers).
        """
        due, gathering = [], []
        for name, waiting in self._stages.items():
            if not waiting.items:
                continue
            arrived = waiting.items[0][0]
            if len(waiting.items) >= waiting.batch_size or now >= arrived + self.max_wait:
                due.append((arrived, name))
            else:
                gathering.append(arrived + self.max_wait)
        if due:
            return min(due)[1], None
        return None, min(gathering, default=None)

    def _run(self, stage: str, call: ModelCall, entries: list) -> None:
        inputs = [entry[1] for entry in entries]
        futures = [entry[2] for entry in entries]
        labels = [entry[3] for entry in entries]
        outputs = self._call(stage, call, inputs, labels)
        if isinstance(outputs, BaseException) and len(inputs) > 1:
            logger.warning(
                "%s of %d articles in one call failed (%s: %s); running them one at a time",
                stage, len(inputs), type(outputs).__name__, outputs,
            )  # fmt: skip
            pairs = zip(inputs, labels, strict=True)
            outputs = [self._one(stage, call, item, label) for item, label in pairs]
        if isinstance(outputs, BaseException):
            outputs = [outputs]
        for future, output in zip(futures, outputs, strict=True):
            if isinstance(output, BaseException):
                future.set_exception(output)
            else:
                future.set_result(output)

    def _one(self, stage: str, call: ModelCall, item, label):
        outputs = self._call(stage, call, [item], [label])
        return outputs if isinstance(outputs, BaseException) else outputs[0]

    def _call(
        self, stage: str, call: ModelCall, inputs: list, labels: list
    ) -> list | BaseException:
        if self.on_call is not None:
            try:
                self.on_call(stage, labels)
            except Exception as error:  # a record not written must not stop the model
                logger.warning("%s: could not record the call (%s)", stage, error)
        started = time.monotonic()
        self._running = (stage, started, labels)
        self.calls += 1
        try:
            outputs = list(call(inputs))
        except Exception as error:
            return error
        finally:
            self._running = None
        logger.info("%s: one call over %d inputs in %.2fs", stage, len(inputs),
                    time.monotonic() - started)  # fmt: skip
        if len(outputs) != len(inputs):
            return RuntimeError(f"{stage} returned {len(outputs)} outputs for {len(inputs)}")
        return outputs

    def _watch(self) -> None:
        reported = None
        while not self._stopping.wait(min(1.0, self.time_limit / 4)):
            running = self._running
            if running is None or running is reported:
                continue
            stage, started, labels = running
            if time.monotonic() - started > self.time_limit:
                reported = running
                logger.critical(
                    "a %s call over %d inputs has run %.0f s, past the %.0f s limit",
                    stage, len(labels), time.monotonic() - started, self.time_limit,
                )  # fmt: skip
                if self.on_hang is not None:
                    self.on_hang(stage, labels)
