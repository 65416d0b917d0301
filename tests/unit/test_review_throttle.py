"""Failed logins: counted per name and per client address, and the studio's answer to many."""

from __future__ import annotations

from producer.review import throttle as throttles
from producer.review.throttle import LoginThrottle, login_keys
from tests.unit.review_studio import ADMIN, PASSWORD, REVIEWER, login, make_studio


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_name_waits_after_five_recent_failures_and_may_try_again_later():
    clock = Clock()
    throttle = LoginThrottle(max_failures=5, max_address_failures=20, clock=clock)
    keys = login_keys("Ada ", "10.0.0.7")
    assert keys == ("name:ada", "peer:10.0.0.7")
    for _ in range(5):
        assert throttle.reserve(keys) == 0  # each one failed: nobody called succeeded()
        clock.now += 10
    assert throttle.reserve(keys) == 900 - 50  # until the first failure is 15 min old
    assert throttle.reserve(login_keys("rolf", "10.0.0.7")) == 0  # the address may go on
    clock.now += 900 - 50
    assert throttle.reserve(keys) == 0


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


def test_the_studio_answers_429_after_five_wrong_passwords_even_for_the_right_one(tmp_path):
    studio = make_studio(tmp_path, peer="203.0.113.9", loopback=False)
    for _ in range(5):
        assert login(studio, ADMIN, "wrong password").status_code == 401
    refused = login(studio, ADMIN, PASSWORD)
    assert refused.status_code == 429
    assert "too many failed logins: try again in 15 min" in refused.text
    assert login(studio, REVIEWER, PASSWORD).status_code == 303  # another name may go on


def test_an_overlong_name_is_refused_without_being_counted(tmp_path):
    studio = make_studio(tmp_path)
    for _ in range(10):
        assert login(studio, "x" * 100_000, "wrong password").status_code == 401
    assert not studio.client.app.state.login_throttle._failures
