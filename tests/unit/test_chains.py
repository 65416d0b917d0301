"""The messages of an article's chain: stages, arguments and priorities."""

from __future__ import annotations

import pytest

from tasks.chains import article_chain
from tasks.queues import FOLLOW_UP_PRIORITY, NORMAL_PRIORITY, ROUTES, URGENT_PRIORITY


def queue_of(task_name: str) -> str:
    return next(route["queue"] for name, route in ROUTES if name == task_name)


def test_catalog_work_serves_each_queues_second_stage_before_the_next_articles_first():
    tasks = article_chain(7, "A-7").tasks
    assert [t.task for t in tasks] == [
        "farm.translate",
        "farm.extract",
        "farm.render",
        "farm.score",
    ]
    assert tasks[0].args == (7,) and all(t.args == () for t in tasks[1:])
    priorities = {t.task: t.options["priority"] for t in tasks}
    for first, follow_up in (("farm.translate", "farm.extract"), ("farm.render", "farm.score")):
        assert queue_of(first) == queue_of(follow_up)
        # Redis serves the lower number first.
        assert priorities[follow_up] < priorities[first] == NORMAL_PRIORITY
    assert URGENT_PRIORITY < FOLLOW_UP_PRIORITY


def test_an_urgent_chain_is_urgent_at_every_stage_and_starts_where_it_is_asked():
    tasks = article_chain(7, "A-7", "render", priority=URGENT_PRIORITY).tasks
    assert [t.task for t in tasks] == ["farm.render", "farm.score"]
    assert {t.options["priority"] for t in tasks} == {URGENT_PRIORITY}


def test_an_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="unknown stage"):
        article_chain(7, "A-7", "paint")


def test_a_chain_step_is_published_again_for_about_a_minute_while_the_broker_is_away():
    from kombu.utils.functional import fxrange

    from tasks.app import celery_config
    from tasks.settings import Settings

    policy = celery_config(Settings())["task_publish_retry_policy"]
    start, most = policy["interval_start"], policy["interval_max"]
    # The waits kombu's retry_over_time takes between tries under this policy.
    waits = fxrange(start, most + start, policy["interval_step"], repeatlast=True)
    waited = sum(next(waits) for _ in range(policy["max_retries"]))
    assert 50 <= waited <= 90
