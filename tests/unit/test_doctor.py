"""``farm doctor``: what a worker on this machine will do, and a first article through it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from producer.cli import main


def doctor(tmp_path: Path, model_cache: Path, *args: str, load: bool = False):
    env = {"FARM_MODEL_CACHE": str(model_cache), "FARM_OUTPUT_DIR": str(tmp_path / "out")}
    argv = [*args, "doctor", *(["--load"] if load else [])]
    return CliRunner().invoke(main, argv, env=env, catch_exceptions=False)


def facts(output: str) -> dict[str, str]:
    pairs = (line.split(": ", 1) for line in output.splitlines() if ": " in line)
    return {name.strip(): value for name, value in pairs}


def test_doctor_on_a_cpu_says_where_the_renderer_runs_and_what_loading_needs(tmp_path, model_cache):
    result = doctor(tmp_path, model_cache, "--profile", "tiny", "--device", "cpu")
    assert result.exit_code == 0, result.output
    found = facts(result.output)
    assert found["device"] == "cpu"
    assert found["dtype"] == "float32"
    assert found["memory mode"].startswith("cpu")
    assert found["fp8 (FARM_RENDER_FP8)"].startswith("unavailable")
    # What the worker will use, decided by the same functions (workers.fast_path).
    assert found["render fast path"].startswith("float32 weights; compile off (auto: no CUDA")
    assert "fp8 off (auto: fp8 needs a CUDA GPU" in found["render fast path"]
    assert "GiB" in found["host memory at start-up"]
    assert found["extract fast path"] == (
        "static KV cache off (auto: no CUDA GPU, little to gain); 8 articles per call"
    )
    assert found["worker role"] == "all (FARM_WORKER_ROLE): text models not on its card"
    for role in ("translator", "extractor", "renderer", "lora", "scorer"):
        assert "present" in found[role]


def test_doctor_with_load_runs_one_article_through_all_four_models(tmp_path, model_cache):
    result = doctor(tmp_path, model_cache, "--profile", "tiny", "--device", "cpu", load=True)
    assert result.exit_code == 0, result.output
    found = facts(result.output)
    with Image.open(found["image"]) as image:
        assert image.size == (64, 64)
    assert found["score"].split("CLIP ")[1]


def test_doctor_names_missing_models_and_exits_1(tmp_path, model_cache, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    result = doctor(tmp_path, model_cache, "--profile", "default", "--device", "cpu")
    assert result.exit_code == 1
    assert "black-forest-labs/FLUX.1-schnell (main): MISSING" in result.output
    assert "farm --profile default models fetch" in result.output


def test_doctor_with_load_frees_the_text_models_before_the_image_models_load(
    tmp_path, model_cache, monkeypatch
):
    import weakref

    from workers import loader

    real, loads, translators = loader.load_runtimes, [], []

    def recording(stages, *args, **kwargs):
        freed = all(translator() is None for translator in translators)
        loads.append((tuple(stages), freed))
        runtimes = real(stages, *args, **kwargs)
        if runtimes.translate is not None:
            translators.append(weakref.ref(runtimes.translate))
        return runtimes

    monkeypatch.setattr(loader, "load_runtimes", recording)
    result = doctor(tmp_path, model_cache, "--profile", "tiny", "--device", "cpu", load=True)

    assert result.exit_code == 0, result.output
    assert loads == [(("translate", "extract"), True), (("render", "score"), True)]


def test_doctor_with_load_measures_the_text_rate_on_a_full_batch_of_distinct_texts(
    tmp_path, model_cache, monkeypatch
):
    monkeypatch.setenv("FARM_TEXT_BATCH_SIZE", "3")
    result = doctor(tmp_path, model_cache, "--profile", "tiny", "--device", "cpu", load=True)

    assert result.exit_code == 0, result.output
    rate = facts(result.output)["text stages"]
    assert rate.startswith("3 articles translated and extracted in ")
    assert rate.endswith(" articles/hour per process")


def test_doctor_with_load_loads_the_extractor_with_the_workers_batch_and_cache_options(
    tmp_path, model_cache, monkeypatch
):
    from tasks.settings import Settings
    from workers import loader

    real, extractors = loader.load_runtimes, []

    def recording(stages, *args, **kwargs):
        runtimes = real(stages, *args, **kwargs)
        if runtimes.extract is not None:
            extractors.append(runtimes.extract)
        return runtimes

    monkeypatch.setattr(loader, "load_runtimes", recording)
    monkeypatch.setenv("FARM_TEXT_BATCH_SIZE", "5")
    result = doctor(tmp_path, model_cache, "--profile", "tiny", "--device", "cpu", load=True)

    assert result.exit_code == 0, result.output
    (extractor,) = extractors
    worker = Settings(device="cpu").extract_options()  # what tasks.boot loads a worker with
    assert worker["max_batch"] == 5
    assert (extractor.max_batch, extractor.static_cache) == (5, False)


def test_a_worker_of_role_all_on_a_card_holds_the_text_models_beside_the_renderer():
    import torch

    from tasks.settings import Settings
    from workers.doctor import shares_the_card

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert shares_the_card(Settings(worker_role="all"), cuda)
    assert not shares_the_card(Settings(worker_role="gpu"), cuda)
    assert not shares_the_card(Settings(worker_role="all"), cpu)
