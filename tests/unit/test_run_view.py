"""``farm run``'s progress display: bars per stage on a terminal, plain lines anywhere else."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from db.models import ArticleStatus
from producer.run_view import RunProgress, end_states, summary_line

BATCH = "20261201-063321-a1b2c3"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def summary(total: int = 100, failed_at: str | None = None, **counts: int) -> dict:
    """A batch summary with ``counts`` per status; the rest of ``total`` pending."""
    statuses = {s.value: 0 for s in ArticleStatus} | counts
    statuses["pending"] = total - sum(counts.values())
    failed = {failed_at: counts["failed"]} if failed_at else {}
    return {"id": BATCH, "total": total, **statuses, "failed_by_stage": failed}


def steady(view: RunProgress, clock: Clock, seconds: int = 30) -> None:
    """One article a second through every stage, after five minutes of loading."""
    view.update(summary())
    clock.now += 300
    for second in range(1, seconds + 1):
        clock.now += 1
        view.update(summary(done=second))


def plain(width: int = 80) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width), out


def test_a_log_gets_plain_lines_and_no_control_codes():
    console, out = plain()
    clock = Clock()
    with RunProgress(console, BATCH, 100, clock=clock, plain_every=10) as view:
        view.loading()
        steady(view, clock)
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    assert lines[0] == f"batch {BATCH}: loading models…"
    # One line each 10 s at most while the batch moves, and the final state.
    assert 3 <= len(lines) <= 6
    assert lines[-1].startswith("translate 30/100, extract 30/100, render 30/100, score 30/100")
    assert "done 30 · needs review 0 · failed 0 · in flight 70" in lines[-1]
    assert "ETA 1m1" in lines[-1]  # 70 left at about one a second


def test_nothing_new_prints_nothing():
    console, out = plain()
    clock = Clock()
    with RunProgress(console, BATCH, 10, clock=clock, plain_every=0) as view:
        for _ in range(5):
            clock.now += 60
            view.update(summary(10, done=3))
    assert len(out.getvalue().splitlines()) == 2  # loading, then the one state


def test_stage_eta_comes_from_the_recent_rate_not_the_loading_time():
    console, _ = plain()
    clock = Clock()
    view = RunProgress(console, BATCH, 100, clock=clock)
    steady(view, clock)
    assert view.stage_eta("score") == pytest.approx(70, rel=0.15)
    clock.now += 3600  # stalled: no rate left, so no ETA
    assert view.stage_eta("score") is None


def drawn(view: RunProgress, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, record=True)
    console.print(view)
    return console.export_text()


def test_the_live_display_says_loading_until_progress_arrives():
    console, _ = plain()
    view = RunProgress(console, BATCH, 100, clock=Clock())
    text = drawn(view)
    assert f"batch {BATCH}: 100 articles · loading models…" in text
    assert "translate" in text and "0/100" in text and "waiting" in text
    view.update(summary(translated=5))
    assert "loading" not in drawn(view)
    view.loading("image models")
    assert "loading image models…" in drawn(view)


@pytest.mark.parametrize("width", [80, 120])
def test_the_live_display_shows_a_bar_per_stage_within_the_width(width):
    console, _ = plain()
    clock = Clock()
    view = RunProgress(console, BATCH, 100, clock=clock)
    steady(view, clock, seconds=20)
    clock.now += 1
    view.update(
        summary(extracted=10, rendered=5, done=17, needs_review=2, failed=1, failed_at="render")
    )
    lines = drawn(view, width).splitlines()
    assert max(len(line) for line in lines) <= width
    rows = {line.split()[0]: line for line in lines if line.split()}
    assert "35/100" in rows["translate"] and "ETA" in rows["translate"]
    assert "24/100" in rows["render"] and "1 failed" in rows["render"]
    assert "19/99" in rows["score"]
    assert lines[-1] == "done 17 · needs review 2 · failed 1 · in flight 80"


def test_a_finished_stage_says_so():
    console, _ = plain()
    view = RunProgress(console, BATCH, 4, clock=Clock())
    view.update(summary(4, extracted=4))
    rows = {line.split()[0]: line for line in drawn(view).splitlines() if line.split()}
    assert "4/4" in rows["extract"] and "finished" in rows["extract"]
    assert "0/4" in rows["render"] and "waiting" in rows["render"]


def test_a_terminal_gets_the_live_display_and_keeps_its_final_state():
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    with RunProgress(console, BATCH, 3, clock=Clock()) as view:
        assert view.live
        view.update(summary(3, done=3))
    final = out.getvalue().rsplit("\x1b[2K", 1)[-1]
    assert f"batch {BATCH}: 3 articles" in final
    assert "score" in final and "3/3" in final and "finished" in final


def test_closing_lines():
    done = summary(3, done=2, failed=1, failed_at="translate")
    assert end_states(done) == "done 2 · needs review 0 · failed 1"
    assert summary_line(done) == f"batch {BATCH}: 3 articles: {end_states(done)}"
    assert summary_line(done, 12.34).startswith(f"batch {BATCH}: 3 articles in 12.3s: done 2")


def test_ready_ends_the_loading_notice_and_a_second_load_is_announced():
    console, out = plain()
    with RunProgress(console, BATCH, 10, clock=Clock()) as view:
        view.ready()
        assert "loading" not in drawn(view)
        view.update(summary(10, translated=10))
        view.loading("image models")
        assert "loading image models…" in drawn(view)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"batch {BATCH}: loading models…"
    assert f"batch {BATCH}: loading image models…" in lines


def test_a_narrow_soft_wrapping_terminal_gets_no_line_wider_than_itself():
    # The farm's console never wraps (soft_wrap); a wider line would break the redraw.
    out = io.StringIO()
    console = Console(file=out, width=40, force_terminal=True, color_system=None, soft_wrap=True)
    clock = Clock()
    with RunProgress(console, BATCH, 100, clock=clock) as view:
        steady(view, clock, seconds=10)
    final = out.getvalue().rsplit("\x1b[2K", 1)[-1]
    final = final.replace("\x1b[?25l", "").replace("\x1b[?25h", "")
    assert max(len(line) for line in final.splitlines()) <= 40
    assert "flight 90" in final
