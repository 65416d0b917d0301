"""The real Flower on the farm's broker: auth enforced, workers and stage tasks visible."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from celery import Celery
from celery.events.receiver import EventReceiver
from kombu import Connection

from tests.integration.farmproc import FARM, farm, wait_until_ended
from tests.integration.test_operations import catalog_rows, write_csv

pytestmark = pytest.mark.integration

AUTH = "operator:s3cret-pass"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def flower(farm_env, tmp_path):
    port = free_port()
    log = open(tmp_path / "flower.log", "w")  # noqa: SIM115  (closed below)
    process = subprocess.Popen(
        [*FARM, "flower", "--port", str(port)],
        env=farm_env | {"FARM_FLOWER_BASIC_AUTH": AUTH},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if get(f"{base}/healthcheck")[0] == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        raise AssertionError((tmp_path / "flower.log").read_text())
    yield base
    process.terminate()
    process.wait(20)
    log.close()


def test_flower_refuses_to_start_without_auth_unless_bound_to_localhost(farm_env):
    refused = farm(farm_env, "flower", "--address", "0.0.0.0", timeout=30)
    assert refused.returncode != 0
    assert "refusing to start Flower without authentication" in refused.stderr


def test_flower_shows_workers_and_each_stage_with_auth_and_401_without(
    farm_env, start_worker, flower, tmp_path
):
    start_worker("text")
    start_worker("gpu", env=farm_env | {"FARM_DEVICE": "cpu"})
    catalog = write_csv(tmp_path / "flower.csv", catalog_rows(2))
    assert farm(farm_env, "submit", str(catalog)).returncode == 0
    wait_until_ended(farm_env["FARM_DATABASE_URL"])

    assert get(f"{flower}/api/workers")[0] == 401
    assert get(f"{flower}/api/tasks", auth="operator:wrong")[0] == 401

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = get(f"{flower}/api/workers?refresh=1", auth=AUTH)
        workers = json.loads(body) if status == 200 else {}
        if {name.split("@")[0].split("-")[0] for name in workers} >= {"text", "gpu"}:
            break
        time.sleep(1)
    assert {name.split("@")[0].split("-")[0] for name in workers} >= {"text", "gpu"}, workers

    for stage in ("translate", "extract", "render", "score"):
        status, body = get(f"{flower}/api/tasks?taskname=farm.{stage}", auth=AUTH)
        assert status == 200
        tasks = json.loads(body)
        assert len(tasks) == 2, (stage, tasks)
        assert {t["state"] for t in tasks.values()} == {"SUCCESS"}
        labels = " ".join(str(t["kwargs"]) for t in tasks.values())
        assert "SKU-1" in labels and "SKU-2" in labels

    status, metrics = get(f"{flower}/metrics")
    assert status == 200
    succeeded = [
        line
        for line in metrics.splitlines()
        if line.startswith("flower_events_total{")
        and 'task="farm.render"' in line
        and 'type="task-succeeded"' in line
    ]
    assert succeeded and float(succeeded[0].rsplit(" ", 1)[1]) >= 1


class CountingReceiver(EventReceiver):
    """Celery's event receiver (as Flower uses it), noting how many events each message held."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sizes: list[int] = []

    def _receive(self, body, message, *args, **kwargs):
        self.sizes.append(len(body) if isinstance(body, list) else 1)
        super()._receive(body, message, *args, **kwargs)


def test_task_events_travel_several_to_a_message_and_every_task_is_reported_ended(
    farm_env, start_worker, tmp_path
):
    events: list[dict] = []
    with Connection(farm_env["FARM_BROKER_URL"]) as connection:
        receiver = CountingReceiver(
            connection, handlers={"*": events.append}, app=Celery(set_as_current=False)
        )
        listening = threading.Thread(target=receiver.capture, kwargs={"wakeup": False})
        listening.start()
        try:
            start_worker("all")
            catalog = write_csv(tmp_path / "events.csv", catalog_rows(3))
            assert farm(farm_env, "submit", str(catalog)).returncode == 0
            wait_until_ended(farm_env["FARM_DATABASE_URL"])
            time.sleep(1)  # the last flush is at most FARM_EVENT_FLUSH_SECONDS away
        finally:
            receiver.should_stop = True
            listening.join(10)

    kinds: dict[str, set[str]] = {}
    for event in events:
        if event["type"].startswith("task-"):
            kinds.setdefault(event["uuid"], set()).add(event["type"])
    ended = {"task-succeeded", "task-retried", "task-failed"}
    assert len(kinds) >= 12  # three articles, four stages
    for seen in kinds.values():
        assert {"task-received", "task-started"} <= seen and seen & ended, seen
    assert max(receiver.sizes) > 1, receiver.sizes
