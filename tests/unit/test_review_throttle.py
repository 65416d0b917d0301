"""Failed logins: counted per name and per client address, and the studio's answer to many."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from producer.review import throttle as throttles
from producer.review.throttle import LoginThrottle, login_keys
from tests.unit.review_studio import (
    ADMIN,
    PASSWORD,
    REVIEWER,
    csrf_of,
    login,
    make_studio,
)


def make_client(studio, peer: str) -> TestClient:
    return TestClient(studio.client.app, follow_redirects=False, client=(peer, 50000))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_name_from_one_address_waits_after_five_recent_failures_and_may_try_again_later():
    clock = Clock()
    throttle = LoginThrottle(max_failures=5, max_address_failures=20, clock=clock)
    keys = login_keys("Ada ", "10.0.0.7")
    assert keys == ("name:ada", "peer:10.0.0.7", "pair:10.0.0.7 ada")
    for _ in range(5):
        assert throttle.reserve(keys) == 0  # each one failed: nobody called succeeded()
        clock.now += 10
    assert throttle.reserve(keys) == 900 - 50  # until the first failure is 15 min old
    assert throttle.reserve(login_keys("rolf", "10.0.0.7")) == 0  # the address may go on
    clock.now += 900 - 50
    assert throttle.reserve(keys) == 0


def test_five_failures_of_a_name_only_delay_it_from_other_addresses_by_growing_steps():
    clock = Clock()
    throttle = LoginThrottle(max_failures=5, max_address_failures=20, clock=clock)
    for number in range(5):
        assert throttle.reserve(login_keys("ada", f"203.0.113.{number}")) == 0
    owner = login_keys("ada", "10.0.0.7")
    assert throttle.reserve(owner) == 1  # a second after the latest failure, not 15 min
    delays = []
    for number in range(5, 15):  # a guesser spread over addresses, as fast as allowed
        clock.now += throttle.reserve(login_keys("ada", f"203.0.113.{number}")) or 0
        assert throttle.reserve(login_keys("ada", f"203.0.113.{number}")) == 0
        delays.append(throttle.reserve(owner))
    assert delays == [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]  # doubling, never past a minute
    clock.now += 60
    assert throttle.reserve(owner) == 0
    throttle.succeeded(owner)
    assert throttle.reserve(login_keys("ada", "203.0.113.99")) == 0  # forgotten


def test_an_address_waits_after_twenty_failures_over_any_names():
    throttle = LoginThrottle(max_failures=5, max_address_failures=20, clock=Clock())
    for number in range(20):
        assert throttle.reserve(login_keys(f"user{number}", "10.0.0.7")) == 0
    assert throttle.reserve(login_keys("ada", "10.0.0.7")) > 0
    assert throttle.reserve(login_keys("ada", "10.0.0.8")) == 0


def test_attempts_counted_before_their_passwords_are_checked_cannot_outrun_the_limit():
    throttle = LoginThrottle(max_failures=5, clock=Clock())
    keys = login_keys("ada", None)
    at_once = [throttle.reserve(keys) for _ in range(100)]  # a burst, none answered yet
    assert at_once.count(0) == 5


def test_a_right_password_forgets_the_names_failures_and_takes_itself_back_from_the_address():
    throttle = LoginThrottle(max_failures=2, max_address_failures=2, clock=Clock())
    keys = login_keys("ada", "10.0.0.7")
    throttle.reserve(keys)  # wrong
    throttle.reserve(keys)
    throttle.succeeded(keys)  # right
    assert throttle.reserve(login_keys("ada", None)) == 0
    assert throttle.reserve(login_keys("someone", "10.0.0.7")) == 0  # 1 + this one
    assert throttle.reserve(login_keys("other", "10.0.0.7")) > 0


def test_random_names_cannot_grow_the_counts_without_bound(monkeypatch):
    monkeypatch.setattr(throttles, "MAX_KEYS", 50)
    throttle = LoginThrottle(clock=Clock())
    for number in range(500):
        throttle.reserve(login_keys(f"guess{number}", None))
    assert len(throttle._failures) == 50


def test_five_wrong_passwords_from_elsewhere_do_not_lock_the_owner_out(tmp_path):
    studio = make_studio(tmp_path, peer="203.0.113.9", loopback=False)
    for _ in range(5):
        assert login(studio, ADMIN, "wrong password").status_code == 401
    refused = login(studio, ADMIN, PASSWORD)  # the guesser's own address is held back
    assert refused.status_code == 429
    assert "too many failed logins: try again in 15 min" in refused.text
    assert login(studio, REVIEWER, PASSWORD).status_code == 303  # another name may go on
    throttle = studio.client.app.state.login_throttle
    throttle.clock = lambda: time.monotonic() + 1  # the name's one-second delay is over
    owner = make_client(studio, "198.51.100.4")
    page = owner.get("/login")
    answer = owner.post(
        "/login", data={"csrf": csrf_of(page.text), "name": ADMIN, "password": PASSWORD}
    )
    assert answer.status_code == 303


@pytest.mark.parametrize("auth_header", [None, "X-Forwarded-User"])
def test_a_local_proxy_is_shared_only_when_a_proxy_header_is_configured(tmp_path, auth_header):
    studio = make_studio(tmp_path, peer="127.0.0.1", auth_header=auth_header)
    for number in range(20):
        assert login(studio, f"user{number}", "wrong password").status_code == 401
    answer = login(studio, REVIEWER, PASSWORD)
    # Without a configured proxy 127.0.0.1 is one client, counted like any other.
    assert answer.status_code == (303 if auth_header else 429)


def test_an_overlong_name_is_refused_without_being_counted(tmp_path):
    studio = make_studio(tmp_path)
    for _ in range(10):
        assert login(studio, "x" * 100_000, "wrong password").status_code == 401
    assert not studio.client.app.state.login_throttle._failures
