"""Failed logins: counted per name and per client address, and the studio's answer to many."""

from __future__ import annotations

from producer.review.throttle import LoginThrottle, login_keys
from tests.unit.review_studio import ADMIN, PASSWORD, REVIEWER, login, make_studio


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_logins_wait_after_five_recent_failures_and_may_try_again_later():
    clock = Clock()
    throttle = LoginThrottle(max_failures=5, window_seconds=900, clock=clock)
    keys = login_keys("Ada ", "10.0.0.7")
    assert keys == ("name:ada", "peer:10.0.0.7")
    for _ in range(4):
        throttle.failed(keys)
        clock.now += 10
    assert throttle.wait_seconds(keys) == 0
    throttle.failed(keys)
    assert throttle.wait_seconds(keys) == 900 - 40  # until the first failure is 15 min old
    assert throttle.wait_seconds(login_keys("rolf", "10.0.0.7")) > 0  # the same address
    assert throttle.wait_seconds(login_keys("rolf", "10.0.0.8")) == 0
    clock.now += 900 - 40
    assert throttle.wait_seconds(keys) == 0


def test_a_success_forgets_the_names_failures_but_not_the_addresss():
    throttle = LoginThrottle(max_failures=2, clock=Clock())
    keys = login_keys("ada", "10.0.0.7")
    throttle.failed(keys)
    throttle.succeeded(keys[:1])
    throttle.failed(keys)
    assert throttle.wait_seconds(login_keys("ada", None)) == 0
    assert throttle.wait_seconds(login_keys("someone", "10.0.0.7")) > 0


def test_the_studio_answers_429_after_five_wrong_passwords_even_for_the_right_one(tmp_path):
    studio = make_studio(tmp_path, peer="203.0.113.9", loopback=False)
    for _ in range(5):
        assert login(studio, ADMIN, "wrong password").status_code == 401
    refused = login(studio, ADMIN, PASSWORD)
    assert refused.status_code == 429
    assert "too many failed logins: try again in 15 min" in refused.text
    # The address made the failures: another name from it waits too.
    assert login(studio, REVIEWER, PASSWORD).status_code == 429


def test_behind_a_trusted_proxy_only_the_name_is_held_back(tmp_path):
    studio = make_studio(tmp_path, peer="127.0.0.1")  # the proxy everyone comes through
    for _ in range(5):
        login(studio, ADMIN, "wrong password")
    assert login(studio, ADMIN, PASSWORD).status_code == 429
    assert login(studio, REVIEWER, PASSWORD).status_code == 303
