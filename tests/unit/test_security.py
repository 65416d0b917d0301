"""Security settings: JSON only, TLS brokers, credentials kept out of messages and logs."""

from __future__ import annotations

import ssl

import pytest
from pydantic import SecretStr

from producer.submit import BrokerUnavailable, check_broker
from tasks.app import celery_config, configure
from tasks.settings import Settings


def test_only_json_is_accepted_for_tasks_results_and_events():
    config = celery_config(Settings())
    assert config["accept_content"] == ["json"]
    assert config["task_serializer"] == config["event_serializer"] == "json"


def test_a_rediss_broker_checks_certificates_unless_the_url_says_otherwise():
    secure = celery_config(Settings(broker_url=SecretStr("rediss://:pw@redis.example:6380/0")))
    assert secure["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    explicit = "rediss://:pw@redis.example:6380/0?ssl_cert_reqs=CERT_OPTIONAL"
    assert celery_config(Settings(broker_url=SecretStr(explicit)))["broker_use_ssl"] is None
    assert celery_config(Settings())["broker_use_ssl"] is None


def test_the_broker_password_is_a_secret_and_never_in_an_error_message():
    settings = Settings(broker_url="redis://:hunter2-secret@127.0.0.1:1/0")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.broker_url)
    with pytest.raises(BrokerUnavailable) as error:
        check_broker(configure(settings), timeout=1)
    assert "hunter2" not in str(error.value)
    assert "127.0.0.1:1" in str(error.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [("redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0"),
     ("redis://:hunter2-secret@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
     ("redis://farm:hunter2-secret@127.0.0.1:1/0", "redis://farm:***@127.0.0.1:1/0"),
     ("redis://farm@127.0.0.1:1/0", "redis://farm@127.0.0.1:1/0")],
)  # fmt: skip
def test_the_broker_url_masks_only_a_password_that_exists(url, shown):
    with pytest.raises(BrokerUnavailable) as error:
        check_broker(configure(Settings(broker_url=SecretStr(url))), timeout=1)
    assert f"cannot reach the broker at {shown}:" in str(error.value)
    assert "hunter2" not in str(error.value)
