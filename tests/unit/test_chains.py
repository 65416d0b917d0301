"""The messages of an article's chain: stages, arguments, queues and priorities."""

from __future__ import annotations

import pytest

from tasks.app import configure
from tasks.chains import article_chain, send_chains
from tasks.queues import (
    FOLLOW_UP_PRIORITY,
    GPU_QUEUE,
    NORMAL_PRIORITY,
    TEXT_QUEUE,
    URGENT_PRIORITY,
    stage_priority,
)
from tasks.registry import ORDER, ROUTES, STAGES
from tasks.settings import Settings


def queue_of(task_name: str) -> str:
    return next(route["queue"] for name, route in ROUTES if name == task_name)


def test_each_stage_task_is_routed_to_its_stages_queue():
    assert [name for name, _ in ROUTES] == [STAGES[stage].task for stage in ORDER]
    assert {name: route["queue"] for name, route in ROUTES} == {
        "farm.translate": TEXT_QUEUE,
        "farm.extract": TEXT_QUEUE,
        "farm.render": GPU_QUEUE,
        "farm.score": GPU_QUEUE,
    }


def test_a_chain_runs_every_stage_in_order_and_only_its_first_message_names_the_article():
    tasks = article_chain(7, "A-7").tasks
    assert [t.task for t in tasks] == [
        "farm.translate",
        "farm.extract",
        "farm.render",
        "farm.score",
    ]
    assert tasks[0].args == (7,) and all(t.args == () for t in tasks[1:])
    assert all(t.kwargs == {"key": "A-7"} for t in tasks)
    # The first stage ignores what came before; the later ones get the article id passed on.
    assert tasks[0].immutable and not any(t.immutable for t in tasks[1:])


def test_catalog_work_serves_each_queues_second_stage_before_the_next_articles_first():
    tasks = article_chain(7, "A-7").tasks
    priorities = {t.task: t.options["priority"] for t in tasks}
    assert priorities == {
        "farm.translate": NORMAL_PRIORITY,
        "farm.extract": FOLLOW_UP_PRIORITY,
        "farm.render": NORMAL_PRIORITY,
        "farm.score": FOLLOW_UP_PRIORITY,
    }
    for first, follow_up in (("farm.translate", "farm.extract"), ("farm.render", "farm.score")):
        assert queue_of(first) == queue_of(follow_up)
        # Redis serves the lower number first.
        assert priorities[follow_up] < priorities[first]
    assert URGENT_PRIORITY < FOLLOW_UP_PRIORITY


def test_a_chain_started_later_keeps_the_follow_up_priorities_of_its_stages():
    tasks = article_chain(7, "A-7", "extract").tasks
    assert [t.task for t in tasks] == ["farm.extract", "farm.render", "farm.score"]
    assert [t.options["priority"] for t in tasks] == [
        FOLLOW_UP_PRIORITY,
        NORMAL_PRIORITY,
        FOLLOW_UP_PRIORITY,
    ]
    assert tasks[0].args == (7,) and tasks[0].immutable


def test_an_urgent_chain_is_urgent_at_every_stage_and_starts_where_it_is_asked():
    tasks = article_chain(7, "A-7", "render", priority=URGENT_PRIORITY).tasks
    assert [t.task for t in tasks] == ["farm.render", "farm.score"]
    assert [t.options["priority"] for t in tasks] == [URGENT_PRIORITY, URGENT_PRIORITY]
    assert tasks[0].args == (7,)


def test_only_follow_up_stages_of_normal_work_move_ahead():
    assert stage_priority(True, NORMAL_PRIORITY) == FOLLOW_UP_PRIORITY
    assert stage_priority(False, NORMAL_PRIORITY) == NORMAL_PRIORITY
    assert stage_priority(True, URGENT_PRIORITY) == URGENT_PRIORITY
    assert stage_priority(False, URGENT_PRIORITY) == URGENT_PRIORITY


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


def test_chains_go_to_the_broker_configured_last_in_a_process():
    # The producer pool of a first configuration (no connection is opened to make it).
    first = configure(Settings(broker_url="redis://127.0.0.1:1/0"))
    assert first.amqp.producer_pool is not None
    app = configure(Settings(broker_url="memory://"))
    with app.connection_for_write() as connection:
        queue = connection.SimpleQueue(TEXT_QUEUE)
        queue.clear()
        assert send_chains(app, [(1, "K1")]) == 1
        assert queue.qsize() == 1
        queue.clear()
