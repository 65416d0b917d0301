"""Benchmark building blocks that run in a blink: fake runtimes, real-shape model configs,
synthetic catalogs, the CPU meter, the render-stream measurement and the log and timeline
arithmetic of the distributed benchmarks."""

import os
import time

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from bench import fake_runtimes, messages, recovery, scale, stream  # noqa: E402
from bench.catalog import synthetic_rows, write_workbook  # noqa: E402
from bench.cpuload import CpuMeter  # noqa: E402
from bench.gpu_models import build_parts, parameter_count, real_spec  # noqa: E402
from producer.catalog import read_catalog  # noqa: E402
from tasks.settings import Settings  # noqa: E402


def test_zero_cost_runtimes_answer_like_the_real_ones():
    runtimes = fake_runtimes.zero_cost(("translate", "extract", "render", "score"), Settings())
    assert runtimes.translate(["Ein Kleid"]).texts == ["Ein Kleid"]
    attributes = runtimes.extract(["A dress"]).attributes[0]
    assert set(attributes) == set(fake_runtimes.ATTRIBUTES)
    images = runtimes.render(["a dress", "a coat"], [1, 2]).images
    assert [image.size for image in images] == [(16, 16)] * 2
    assert runtimes.score(images, ["a", "b"]).scores == [30.0, 30.0]
    assert runtimes.profile.width == 16


def test_a_worker_gets_only_its_own_stages():
    runtimes = fake_runtimes.zero_cost(("render", "score"), Settings())
    assert runtimes.translate is None and runtimes.render is not None


def test_fixed_render_sleeps_the_configured_time_per_image(monkeypatch):
    monkeypatch.setenv(scale.RENDER_SECONDS_ENV, "0.05")
    runtimes = fake_runtimes.fixed_render(("render",), Settings())
    assert runtimes.render(["a", "b"], [1, 2]).seconds >= 0.1


def test_the_benchmarks_and_the_fake_renderer_agree_on_the_variable():
    for module in (scale, messages, recovery):
        assert module.RENDER_SECONDS_ENV == fake_runtimes.RENDER_SECONDS_ENV, module.__name__


def test_factories_are_called_as_the_worker_boot_calls_them(monkeypatch):
    from tasks import boot
    from workers.loader import Runtimes

    monkeypatch.setenv(fake_runtimes.RENDER_SECONDS_ENV, "0")
    settings = Settings(runtime_factory="bench.fake_runtimes:fixed_render", worker_role="gpu")
    runtimes = boot.load_for_role(settings)
    assert isinstance(runtimes, Runtimes)
    assert runtimes.render is not None and runtimes.score is not None
    assert runtimes.translate is None


def test_real_shape_models_have_the_published_sizes(tiny_profile):
    # Built on the meta device: shapes only, no memory, no time.
    parts = build_parts(real_spec(tiny_profile), torch.device("meta"), torch.bfloat16)
    billions = {
        "flux": parameter_count(parts.pipeline.transformer) / 1e9,
        "t5": parameter_count(parts.pipeline.text_encoder_2) / 1e9,
        "phi3": parameter_count(parts.phi3) / 1e9,
        "clip": parameter_count(parts.clip) / 1e9,
        "marian": parameter_count(parts.marian) / 1e9,
    }
    expected = {"flux": 11.9, "t5": 4.76, "phi3": 3.82, "clip": 0.428, "marian": 0.074}
    for name, size in expected.items():
        assert billions[name] == pytest.approx(size, rel=0.02), name


def test_the_synthetic_workbook_reads_back_as_the_same_articles(tmp_path):
    path = write_workbook(tmp_path / "catalog.xlsx", 25, seed=3)
    rows = read_catalog([path])
    expected = synthetic_rows(25, seed=3)
    assert [row.key for row in rows] == [row.key for row in expected]
    assert [row.source_text for row in rows] == [row.source_text for row in expected]


def test_the_cpu_meter_gives_a_share_between_0_and_1():
    meter = CpuMeter()
    meter.start()
    sum(range(2_000_000))
    busy = meter.busy()
    assert busy is None or 0.0 <= busy <= 1.0


def test_studio_photos_are_deterministic_pictures_of_the_asked_size():
    first, again, other = (stream.studio_photo(seed, 96) for seed in (1, 1, 2))
    assert first.size == (96, 96) and first.mode == "RGB"
    assert first.tobytes() == again.tobytes() and first.tobytes() != other.tobytes()


def test_the_stream_benchmark_times_both_sides_and_ends_with_the_streamed_idle_fraction(capsys):
    assert stream.main(["--quick", "--render-seconds", "0.02", "--size", "64"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    inline, streamed = (line.split(": ") for line in lines[-2:])
    assert inline[0] == "render_idle_fraction_inline" and float(inline[1]) >= 0
    assert streamed[0] == "render_idle_fraction" and float(streamed[1]) >= 0
    assert sum(line.startswith("round 1 ") for line in lines) == 2


def test_the_card_idle_time_is_the_gaps_between_renders_not_before_or_after():
    idle, busy = stream.idle_and_busy([(2.0, 3.0), (0.5, 1.5), (1.6, 2.0)])
    assert idle == pytest.approx(0.1)  # 1.5 to 1.6; 2.0 to 2.0 is no gap
    assert busy == pytest.approx(2.4)


def test_pngs_written_by_the_callers_leave_the_renderer_no_gap_that_inline_writes_leave(
    tmp_path, monkeypatch
):
    from tasks import outputs

    # A PNG write that takes half a render and leaves the CPU free (as zlib does, without
    # the GIL), so the figure does not depend on how busy this machine is.
    save = outputs.save_png
    monkeypatch.setattr(outputs, "save_png", lambda *a: (time.sleep(0.05), save(*a)))
    renderer = fake_runtimes.SleepingRenderer(0.1, [stream.studio_photo(0, 32)])
    chosen = stream.articles(["a dress"] * 6, "t")
    inline = stream.run_side("inline", renderer, chosen, tmp_path, threads=3)
    streamed = stream.run_side("streamed", renderer, chosen, tmp_path, threads=3)
    assert inline.idle_fraction > 0.4  # each gap holds a PNG write
    assert streamed.idle_fraction < 0.15
    assert len(list((tmp_path / "streamed").rglob("*.png"))) == 6


def test_the_sleeping_renderer_hands_out_given_pictures_by_seed():
    pictures = [stream.studio_photo(seed, 32) for seed in (0, 1)]
    renderer = fake_runtimes.SleepingRenderer(0.0, pictures)
    images = renderer(["a", "b", "c"], [4, 5, 6]).images
    assert images == [pictures[0], pictures[1], pictures[0]]


def test_the_scale_timeline_splits_each_process_time_into_its_parts(tmp_path):
    from datetime import UTC, datetime, timedelta

    from db.engine import make_engine, migrate, session_factory
    from db.models import Article, Batch, Render, StageRun

    sessions = session_factory(make_engine(f"sqlite:///{tmp_path / 'farm.db'}"))
    migrate(sessions.kw["bind"])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    at = lambda seconds: t0 + timedelta(seconds=seconds)  # noqa: E731
    # One process holding two render messages at once (claimed 0.1 s apart, the second
    # waiting its turn on the model executor), then each article scored, with 0.2 s between
    # its runs where it held nothing.
    runs = [("render", 1.0, 3.0), ("render", 1.1, 2.9), ("score", 4.2, 0.3), ("score", 4.7, 0.3)]
    with sessions() as session, session.begin():
        session.add(Batch(id="b", profile="bench"))
        for n in (1, 2):
            article = Article(
                batch_id="b",
                key=f"K{n}",
                file_stem=f"K{n}",
                source_file="c",
                source_sheet="s",
                source_row=n,
                source_text="Rock",
            )
            session.add(article)
            session.flush()
            session.add(
                Render(
                    article_id=article.id,
                    attempt=1,
                    seed=n,
                    model_id="m",
                    width=1,
                    height=1,
                    steps=1,
                    image_path="x",
                    seconds=1.4,
                    worker="g0",
                )
            )
            for stage, start, seconds in runs[n - 1 :: 2]:
                session.add(
                    StageRun(
                        article_id=article.id,
                        stage=stage,
                        attempt=1,
                        worker="g0",
                        outcome="ok",
                        started_at=at(start),
                        seconds=seconds,
                    )
                )

    split = scale.gpu_timeline(sessions, "b", (at(0).timestamp(), at(5.5).timestamp()))

    assert split == pytest.approx(
        {
            "render call": 1.4,  # 2.8 s of renderer time over 2 articles
            # held: the render runs' union 1.0-4.0 and the scores 4.2-4.5, 4.7-5.0: 3.6 s
            "held, renderer idle": (3.6 - 2.8) / 2,
            "nothing held": (0.2 + 0.2) / 2,  # 4.0 to 4.2, 4.5 to 4.7
            "before first, after last": (1.0 + 0.5) / 2,
        }
    )
    # The parts cover the process's whole window, 5.5 s for 2 articles.
    assert sum(split.values()) == pytest.approx(5.5 / 2)


def test_messages_are_counted_per_stage_from_the_received_lines_only(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text(
        "[2026-12-01 10:00:00,000: INFO/MainProcess] Task farm.translate[0a-1b] received\n"
        "[2026-12-01 10:00:00,100: INFO/MainProcess] Task farm.translate[0a-1b] succeeded\n"
        "[2026-12-01 10:00:00,200: INFO/MainProcess] Task farm.render[2c-3d] received\n"
        "[2026-12-01 10:00:00,300: INFO/MainProcess] Task farm.render[4e-5f] received\n"
    )
    counts = messages.received([log])
    assert counts == {"farm.translate": 1, "farm.render": 2}
    ratios = messages.per_article(counts, 2)
    assert ratios == {"translate": 0.5, "extract": 0.0, "render": 1.0, "score": 0.0}


def test_the_recovery_benchmark_drops_delivery_settings_the_caller_set(monkeypatch, tmp_path):
    monkeypatch.setenv("FARM_LEASE_SECONDS", "5")
    monkeypatch.setenv("FARM_REAPER_SECONDS", "1")
    args = recovery.parse_args([])
    argv, env = recovery.worker_command(args, "postgresql://x/y", "redis://z/8", tmp_path)
    assert argv[-2:] == ["worker", "all"]
    assert "FARM_LEASE_SECONDS" not in env and "FARM_REAPER_SECONDS" not in env
    assert env[recovery.RENDER_SECONDS_ENV] == repr(args.render_seconds)


def test_the_recovery_benchmark_refuses_a_kill_outside_the_render():
    with pytest.raises(SystemExit):
        recovery.parse_args(["--render-seconds", "2", "--kill-after", "3"])
