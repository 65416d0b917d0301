"""Fault injection for the integration tests.

Worker processes started with ``FARM_RUNTIME_FACTORY=tests.faults:load`` load the tiny
runtimes and wrap each in :class:`Faulty`, which consults a plan file (``FARM_FAULT_PLAN``)
before every call. A rule fires for calls of its stage whose inputs contain its ``match``
text (for render, the seed is part of the inputs), ``times`` times across all processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from pathlib import Path

PLAN_ENV = "FARM_FAULT_PLAN"


def write_plan(path: Path, rules: list[dict]) -> Path:
    """Write a fault plan: rules like ``{"stage": "render", "action": "sleep", "seconds": 3}``.

    Actions: ``sleep`` (then run normally), ``hang`` (ignores the soft time limit),
    ``kill`` (SIGKILL this worker process), ``exit`` (this worker process exits with ``code``,
    default 1), ``oom`` (CUDA out-of-memory), ``raise`` (RuntimeError).
    ``times`` defaults to 1; ``match`` to any call.
    """
    path.write_text(json.dumps({"rules": rules, "fired": []}))
    return path


def fired(path: Path) -> list[dict]:
    """The faults that fired so far, in order."""
    return json.loads(path.read_text())["fired"]


def _take(path: Path, stage: str, subject: str) -> dict | None:
    with open(path, "r+") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        plan = json.load(stream)
        for rule in plan["rules"]:
            if rule["stage"] == stage and rule.get("match", "") in subject:
                if rule.setdefault("times", 1) <= 0:
                    continue
                rule["times"] -= 1
                plan["fired"].append({"stage": stage, "action": rule["action"], "pid": os.getpid()})
                stream.seek(0)
                stream.truncate()
                json.dump(plan, stream)
                return rule
    return None


def _act(rule: dict) -> None:
    action = rule["action"]
    if action == "sleep":
        time.sleep(rule.get("seconds", 1))
    elif action == "hang":
        from celery.exceptions import SoftTimeLimitExceeded

        while True:  # like a kernel stuck in C code: only the hard limit ends it
            with contextlib.suppress(SoftTimeLimitExceeded):
                time.sleep(0.2)
    elif action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        os._exit(rule.get("code", 1))
    elif action == "oom":
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
    elif action == "raise":
        raise RuntimeError(rule.get("message", "injected failure"))


class Faulty:
    """A runtime whose calls first pass the fault plan."""

    def __init__(self, inner, stage: str, plan: Path):
        self.inner, self.stage, self.plan = inner, stage, plan

    def __call__(self, *args):
        subject = " ".join(str(item) for batch in args for item in batch)
        rule = _take(self.plan, self.stage, subject)
        if rule is not None:
            _act(rule)
        return self.inner(*args)


SKEW_ENV = "FARM_FAULT_CLOCK_SKEW"


def skew_clock(seconds: float) -> None:
    """Run this process's wall clock ``seconds`` off, as on a host whose clock is wrong.

    ``time.time`` (Celery's and kombu's clock: task ETAs, events, Redis timestamps) and the
    farm's ``utcnow``, wherever a module holds it, are shifted; the monotonic clock, which
    measures durations, is left alone, as a wrong wall clock leaves it.
    """
    import datetime
    import sys

    from db import models

    real_time, real_now = time.time, models.utcnow
    time.time = lambda: real_time() + seconds

    def now() -> datetime.datetime:
        return real_now() + datetime.timedelta(seconds=seconds)

    for module in list(sys.modules.values()):
        if getattr(module, "utcnow", None) is real_now:
            module.utcnow = now


def load(stages, settings):
    """Runtime factory: the tiny runtimes of ``stages``, wrapped in :class:`Faulty`; with
    ``FARM_FAULT_CLOCK_SKEW`` the process's wall clock runs that many seconds off."""
    if os.environ.get(SKEW_ENV):
        skew_clock(float(os.environ[SKEW_ENV]))
    from workers.loader import load_runtimes
    from workers.profiles import resolve_profile

    profile = resolve_profile("tiny", settings.model_cache)
    runtimes = load_runtimes(stages, profile, settings.device)
    plan = Path(os.environ[PLAN_ENV])
    for stage in stages:
        setattr(runtimes, stage, Faulty(getattr(runtimes, stage), stage, plan))
    return runtimes
