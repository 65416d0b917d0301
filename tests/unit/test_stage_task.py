"""The base stage task's handling of a batch call's failures, without a worker."""

from __future__ import annotations

import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from bench import fake_runtimes
from db.models import Article
from db.transitions import Claim, ClaimOutcome
from tasks import stages, state
from tasks.app import configure
from tasks.pipeline import render
from tasks.settings import Settings


@pytest.fixture
def claims(tmp_path):
    settings = Settings(output_dir=tmp_path)
    configure(settings)
    state.install_runtimes(fake_runtimes.zero_cost(("render",), settings))
    yield [Claim(ClaimOutcome.claimed, article=Article(id=n, key=f"K-{n}")) for n in (1, 2, 3)]
    state.drop_runtimes()


def test_a_failed_batch_call_is_run_again_one_article_at_a_time(claims):
    calls = []

    def batch_work(articles, ctx):
        calls.append([article.id for article in articles])
        if len(articles) > 1:
            raise RuntimeError("the batch broke the model")
        return [stages.StageOutput(values={"n": articles[0].id})]

    outputs = render._run(stages.render, batch_work, claims)
    assert calls == [[1, 2, 3], [1], [2], [3]]
    assert [output.values["n"] for output in outputs] == [1, 2, 3]


def test_a_batch_out_of_time_is_not_run_again_and_every_article_carries_the_limit(claims):
    calls = []

    def batch_work(articles, ctx):
        calls.append(len(articles))
        raise SoftTimeLimitExceeded()

    outputs = render._run(stages.render, batch_work, claims)
    assert calls == [3]
    assert len(outputs) == 3 and all(isinstance(o, SoftTimeLimitExceeded) for o in outputs)


def test_a_database_error_inside_a_stage_is_raised_for_the_whole_stage_to_be_retried(claims):
    calls = []
    lost = OperationalError("SELECT renders", {}, Exception("terminating connection"))

    def batch_work(articles, ctx):
        calls.append(len(articles))
        raise lost

    def work(article, ctx):
        raise lost

    with pytest.raises(OperationalError):
        render._run(stages.render, batch_work, claims)
    with pytest.raises(OperationalError):
        render._run(work, None, claims[:1])
    assert calls == [3]  # not run again one at a time on a session that is broken
