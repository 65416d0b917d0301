"""The stage registry: order, statuses, queues, roles and how many messages a worker holds."""

from __future__ import annotations

import pytest

from db.models import ArticleStatus
from tasks import stages
from tasks.queues import GPU_QUEUE, TEXT_QUEUE
from tasks.registry import (
    IN_FLIGHT,
    ORDER,
    ROLES,
    STAGES,
    role_concurrency,
    role_queues,
    stage_waiting_in,
    stages_from,
)
from tasks.settings import Settings


def test_the_stages_run_translate_extract_render_score_each_named_as_its_key():
    assert ORDER == ("translate", "extract", "render", "score")
    assert all(stage.name == name for name, stage in STAGES.items())
    assert [STAGES[name].task for name in ORDER] == [f"farm.{name}" for name in ORDER]


def test_each_stage_is_followed_by_the_next_in_order_and_the_last_by_none():
    for name, following in zip(ORDER, ORDER[1:], strict=False):
        assert STAGES[name].next == following
    assert STAGES[ORDER[-1]].next is None


def test_each_stage_leaves_the_article_in_the_status_the_next_stage_waits_in():
    for name, following in zip(ORDER, ORDER[1:], strict=False):
        assert STAGES[name].output == STAGES[following].input
    assert STAGES[ORDER[0]].input == ArticleStatus.pending
    assert STAGES[ORDER[-1]].output == ArticleStatus.done
    assert tuple(STAGES[name].input for name in ORDER) == IN_FLIGHT
    assert len(set(IN_FLIGHT)) == len(ORDER)


def test_each_stage_runs_its_own_prepare_call_and_finish_functions():
    for name, stage in STAGES.items():
        assert stage.prepare is getattr(stages, f"prepare_{name}")
        assert stage.call is getattr(stages, f"call_{name}")
        assert stage.finish is getattr(stages, f"finish_{name}")


def test_only_the_score_stage_reads_the_earlier_render_attempts():
    assert [name for name in ORDER if STAGES[name].needs_renders] == ["score"]


def test_the_second_stage_of_each_queue_is_its_follow_up():
    assert [name for name in ORDER if STAGES[name].follow_up] == ["extract", "score"]
    for name in ("extract", "score"):
        before = ORDER[ORDER.index(name) - 1]
        assert STAGES[before].queue == STAGES[name].queue and not STAGES[before].follow_up


def test_the_text_and_gpu_roles_cover_every_stage_exactly_once():
    assert ROLES["text"] == ("translate", "extract")
    assert ROLES["gpu"] == ("render", "score")
    assert sorted(ROLES["text"] + ROLES["gpu"]) == sorted(ORDER)
    assert ROLES["all"] == ORDER
    for role in ("text", "gpu"):
        assert {STAGES[name].role for name in ROLES[role]} == {role}


def test_a_worker_consumes_the_queues_of_its_roles_stages_once_each_in_stage_order():
    assert role_queues("text") == (TEXT_QUEUE,)
    assert role_queues("gpu") == (GPU_QUEUE,)
    assert role_queues("all") == (TEXT_QUEUE, GPU_QUEUE)
    with pytest.raises(KeyError):
        role_queues("paint")


def test_batch_sizes_come_from_the_settings_and_renders_go_one_per_call():
    settings = Settings(text_batch_size=5, score_batch_size=3)
    sizes = {name: STAGES[name].batch_size(settings) for name in ORDER}
    assert sizes == {"translate": 5, "extract": 5, "render": 1, "score": 3}


def test_the_text_batch_is_larger_in_a_process_on_a_card_unless_it_is_set():
    from tasks.settings import TEXT_BATCH_SIZE_CPU, TEXT_BATCH_SIZE_GPU

    assert TEXT_BATCH_SIZE_GPU > TEXT_BATCH_SIZE_CPU
    assert STAGES["extract"].batch_size(Settings(device="cpu")) == TEXT_BATCH_SIZE_CPU
    assert STAGES["extract"].batch_size(Settings(device="auto")) == TEXT_BATCH_SIZE_CPU
    assert STAGES["extract"].batch_size(Settings(device="cuda:1")) == TEXT_BATCH_SIZE_GPU
    assert STAGES["translate"].batch_size(Settings(device="cuda", text_batch_size=5)) == 5


def test_a_process_holds_a_full_batch_per_stage_and_a_gpu_process_one_message_more():
    settings = Settings(text_batch_size=5, score_batch_size=3)
    assert role_concurrency("text", settings) == 5 + 5
    assert role_concurrency("gpu", settings) == 1 + 3 + 1
    assert role_concurrency("all", settings) == 5 + 5 + 1 + 3 + 1
    # A render batch of one still leaves room for the next render while a PNG is written.
    assert role_concurrency("gpu", Settings(score_batch_size=1)) == 3


def test_stages_from_a_stage_are_it_and_every_later_stage_in_order():
    assert [stage.name for stage in stages_from("translate")] == list(ORDER)
    assert [stage.name for stage in stages_from("render")] == ["render", "score"]
    assert [stage.name for stage in stages_from("score")] == ["score"]
    with pytest.raises(ValueError, match="unknown stage 'paint'"):
        stages_from("paint")


def test_an_article_waits_for_the_stage_whose_input_status_it_is_in():
    for name in ORDER:
        assert stage_waiting_in(STAGES[name].input.value) is STAGES[name]
    assert stage_waiting_in(ArticleStatus.pending.value).name == "translate"
    assert stage_waiting_in(ArticleStatus.rendered.value).name == "score"
    for status in (ArticleStatus.done, ArticleStatus.needs_review, ArticleStatus.failed):
        assert stage_waiting_in(status.value) is None
    assert stage_waiting_in("no such status") is None
