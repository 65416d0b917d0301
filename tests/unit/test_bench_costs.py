"""The cost table, the costed runtimes and their card lock, and bench.scale's plan per shape."""

import os
import threading
import time

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from bench import cards, costs, fake_runtimes, scale, shapes  # noqa: E402
from tasks.settings import TEXT_BATCH_SIZE_CPU, Settings  # noqa: E402

STAGES = ("translate", "extract", "render", "score")


def test_every_figure_of_the_table_names_its_source():
    table = costs.load()
    assert set(table["h100"]) == set(STAGES)
    assert {"translate", "extract"} <= set(table["cpu"])
    for stages in table.values():
        for cost in stages.values():
            assert set(cost.sources) == set(costs.FIGURES)
            assert all(len(source) > 20 for source in cost.sources.values())


def test_the_eager_profile_is_h100_but_for_extraction():
    table = costs.load()
    eager, compiled = table["h100-eager"], table["h100"]
    assert set(eager) == set(STAGES)
    for stage in ("translate", "render", "score"):
        assert eager[stage] == compiled[stage]
    assert eager["extract"].per_call > compiled["extract"].per_call


def test_a_profile_takes_the_stages_it_does_not_list_from_the_one_it_is_like(tmp_path):
    path = small_table(tmp_path)
    path.write_text(
        path.read_text() + "[u]\nlike = 't'\n"
        "[u.extract.per_call]\nseconds = 9.0\nsource = 'test'\n"
        "[u.extract.per_item]\nseconds = 0.0\nsource = 'test'\n"
    )
    table = costs.load(path)
    assert table["u"]["extract"].per_call == 9.0 and table["t"]["extract"].per_call == 0.05
    assert table["u"]["render"] == table["t"]["render"]


@pytest.mark.parametrize("like", ["'nowhere'", "'u'"])
def test_a_profile_like_a_missing_or_second_hand_one_is_refused(tmp_path, like):
    path = small_table(tmp_path)
    path.write_text(path.read_text() + f"[u]\nlike = 't'\n[v]\nlike = {like}\n")
    with pytest.raises(ValueError, match="v: like"):
        costs.load(path)


def test_a_figure_without_a_source_is_refused(tmp_path):
    path = tmp_path / "costs.toml"
    path.write_text(
        "[x.render.per_call]\nseconds = 1.0\nsource = 'a blog'\n"
        "[x.render.per_item]\nseconds = 0.0\n"
    )
    with pytest.raises(ValueError, match="x.render.per_item: a figure must name its source"):
        costs.load(path)


def test_a_call_costs_its_fixed_part_plus_each_input():
    cost = costs.StageCost(per_call=2.0, per_item=0.5, sources={})
    assert cost.seconds(1) == 2.5 and cost.seconds(8) == 6.0
    assert cost.per_article(8) == pytest.approx(0.75)


def test_an_unknown_profile_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match="h100"):
        costs.profile_costs("tpu")


def small_table(tmp_path, seconds: float = 0.05):
    lines = []
    for stage in STAGES:
        lines += [f"[t.{stage}.per_call]", f"seconds = {seconds}", "source = 'test'"]
        lines += [f"[t.{stage}.per_item]", "seconds = 0.01", "source = 'test'"]
    path = tmp_path / "costs.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_costed_runtimes_sleep_the_cost_and_answer_like_the_real_ones(tmp_path, monkeypatch):
    monkeypatch.setenv(fake_runtimes.COST_TABLE_ENV, str(small_table(tmp_path)))
    monkeypatch.setenv(fake_runtimes.COST_PROFILE_ENV, "t")
    monkeypatch.setenv(fake_runtimes.TIME_SCALE_ENV, "2")
    monkeypatch.setenv(fake_runtimes.CARDS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    runtimes = fake_runtimes.costed(STAGES, Settings())
    began = time.perf_counter()
    translated = runtimes.translate(["a", "b", "c"])
    assert time.perf_counter() - began >= 2 * (0.05 + 3 * 0.01) - 0.005
    assert translated.texts == ["a", "b", "c"]
    assert set(runtimes.extract(["x"]).attributes[0]) == set(fake_runtimes.ATTRIBUTES)
    images = runtimes.render(["p"], [7]).images
    assert images[0].size == (16, 16)
    assert runtimes.score(images, ["p"]).scores == [30.0]
    logged = cards.log_path(tmp_path, "3").read_text().split()
    assert logged[0::4] == ["translate", "extract", "render", "score"]


def test_two_holders_of_one_card_take_turns_and_other_cards_do_not_wait(tmp_path):
    spans = {}

    def call(name, card):
        spans[name] = cards.hold(tmp_path, card, "render", 0.2, 1)

    threads = [threading.Thread(target=call, args=a) for a in (("a", "0"), ("b", "0"), ("c", "1"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first, second = sorted((spans["a"], spans["b"]))
    assert second[0] >= first[1] - 0.001  # one card: one call at a time
    assert spans["c"][0] < max(spans["a"][0], spans["b"][0])  # another card: side by side
    busy = cards.busy_seconds(tmp_path, (0.0, time.time() + 1))
    assert busy["0"]["render"] == pytest.approx(0.4, abs=0.05)


def test_card_time_is_clipped_to_the_window(tmp_path):
    cards.log_path(tmp_path, "0").write_text("extract 10.0 14.0 8\nrender 14.0 15.0 1\n")
    assert cards.busy_seconds(tmp_path, (12.0, 14.5)) == {"0": {"extract": 2.0, "render": 0.5}}


def test_scale_keeps_the_fixed_render_mode_by_default():
    args = scale.parse_args(["--gpu-processes", "3", "--quick"])
    assert args.costs is None and args.gpu_processes == 3
    assert args.articles == scale.QUICK_ARTICLES


def test_scale_reads_the_costed_options():
    args = scale.parse_args(["--gpus", "4", "--costs", "h100", "--text-on", "cpu", "--quick"])
    assert (args.gpu_processes, args.costs, args.text_on) == (4, "h100", "cpu")
    assert args.articles == scale.COSTED_QUICK_ARTICLES and args.time_scale == 1.0
    assert scale.parse_args(["--costs", "h100"]).articles == scale.COSTED_ARTICLES
    with pytest.raises(ValueError, match="no profile"):
        scale.parse_args(["--costs", "tpu"])
    with pytest.raises(SystemExit):
        scale.parse_args(["--costs", "h100", "--text-on", "tpu"])


def test_one_cards_rate_is_a_render_and_a_share_of_a_full_score_batch():
    args = scale.parse_args(["--costs", "h100", "--time-scale", "2"])
    table = costs.profile_costs("h100")
    per_image = table["render"].seconds(1) + table["score"].seconds(4) / 4
    seconds, rate = scale.card_rate(args)
    assert seconds == pytest.approx(2 * per_image) and rate == pytest.approx(3600 / seconds)


def test_the_ceiling_is_the_render_and_score_share_of_card_time_when_text_runs_on_the_cards():
    table = costs.profile_costs("h100")
    card = table["render"].seconds(1) + table["score"].seconds(4) / 4
    text = table["translate"].per_article(32) + table["extract"].per_article(32)
    for shape in ("gpu", "cards"):
        args = scale.parse_args(["--gpus", "4", "--costs", "h100", "--text-on", shape,
                                 "--text-batch", "32"])  # fmt: skip
        assert scale.efficiency_ceiling(args) == pytest.approx(card / (card + text))


def test_text_on_the_cpu_bounds_the_ceiling_by_the_text_process_when_it_is_the_slower():
    # The table's CPU extraction takes longer per article than a card's render and score,
    # so the one text process sets the pace, and more cards only lower the ceiling.
    card = scale.card_rate(scale.parse_args(["--costs", "h100"]))[0]
    cpu = costs.profile_costs("cpu")
    text = cpu["translate"].per_article(8) + cpu["extract"].per_article(8)
    assert text > card
    for gpus in (1, 4):
        args = scale.parse_args(["--gpus", str(gpus), "--costs", "h100", "--text-on", "cpu",
                                 "--text-batch", "8"])  # fmt: skip
        assert scale.efficiency_ceiling(args) == pytest.approx(card / (gpus * text))


def plan(shape, tmp_path, **kwargs):
    urls = ("postgresql+psycopg://x/y", "redis://z/13")
    return shapes.worker_commands(shape, 2, "h100", urls, tmp_path, **kwargs)


def queues(argv):
    return argv[argv.index("--queues") + 1]


def test_the_shipped_shape_serves_text_on_every_card(tmp_path):
    planned = plan("gpu", tmp_path, text_batch=32)
    assert [queues(argv) for argv, _ in planned] == ["farm.text,farm.gpu"] * 2
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in planned] == ["0", "1"]
    for _argv, env in planned:
        assert env["FARM_TEXT_BATCH_SIZE"] == "32"
        assert env[fake_runtimes.COST_PROFILE_ENV] == "h100"
        assert env[fake_runtimes.CARDS_DIR_ENV] == str(tmp_path)


def test_todays_shape_adds_one_text_process_on_the_cpu_with_cpu_costs(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    planned = plan("cpu", tmp_path)
    assert [queues(argv) for argv, _ in planned] == ["farm.gpu", "farm.gpu", "farm.text"]
    text_env = planned[-1][1]
    assert text_env["FARM_DEVICE"] == "cpu" and "CUDA_VISIBLE_DEVICES" not in text_env
    assert text_env[fake_runtimes.COST_PROFILE_ENV] == "cpu"
    assert "FARM_TEXT_BATCH_SIZE" not in text_env  # unset: the default of a process on a CPU
    assert Settings(device=text_env["FARM_DEVICE"]).text_batch() == TEXT_BATCH_SIZE_CPU


def test_the_card_shape_pins_its_text_process_to_card_0(tmp_path):
    planned = plan("card", tmp_path)
    assert [queues(argv) for argv, _ in planned] == ["farm.gpu", "farm.gpu", "farm.text"]
    assert planned[-1][1]["CUDA_VISIBLE_DEVICES"] == "0"
    assert planned[-1][1][fake_runtimes.COST_PROFILE_ENV] == "h100"


def test_the_cards_shape_puts_a_text_process_on_every_card_beside_its_gpu_process(tmp_path):
    planned = plan("cards", tmp_path)
    assert [queues(argv) for argv, _ in planned] == ["farm.gpu"] * 2 + ["farm.text"] * 2
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in planned] == ["0", "1", "0", "1"]
    assert {env[fake_runtimes.COST_PROFILE_ENV] for _, env in planned} == {"h100"}


def test_a_costed_run_without_text_batch_uses_the_shipped_default_of_its_shape():
    from bench import scale
    from tasks.settings import TEXT_BATCH_SIZE_CPU, TEXT_BATCH_SIZE_GPU

    on_cards = scale.parse_args(["--costs", "h100", "--text-on", "gpu"])
    on_cpu = scale.parse_args(["--costs", "h100", "--text-on", "cpu"])
    chosen = scale.parse_args(["--costs", "h100", "--text-batch", "5"])

    assert scale.shipped_text_batch(on_cards) == TEXT_BATCH_SIZE_GPU
    assert scale.shipped_text_batch(on_cpu) == TEXT_BATCH_SIZE_CPU
    assert scale.shipped_text_batch(chosen) == 5
