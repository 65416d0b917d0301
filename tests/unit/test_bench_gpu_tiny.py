"""CI smoke test of the GPU benchmark: ``bench/gpu.py --tiny`` on the CPU with the tiny models,
able to import only what the lent GPU machine has and the kit's wheels bring
(:mod:`tests.gpu_machine`)."""

import os
import re
import subprocess
import sys

import pytest

from tests.gpu_machine import blocked_modules, machine_env

LAST_LINE = re.compile(r"images_per_hour: (\d+(?:\.\d+)?)")
CONFIG_LINE = re.compile(r"batch (\d+): ([\d.]+) s/image .*\| (\d+) images/h")
STAGE_LINE = re.compile(
    r"render stage with PNG writes \(\w+\): PNG on the model thread [\d.]+ s/article, "
    r"renderer idle ([\d.]+)% of render time; PNG by the message's thread [\d.]+ s/article, "
    r"idle ([\d.]+)%"
)


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    return machine_env(dict(os.environ), tmp_path_factory.mktemp("gpu-machine"))


@pytest.fixture(scope="module")
def run(model_cache, machine):
    return subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--tiny", "--model-cache", str(model_cache)],
        capture_output=True,
        text=True,
        timeout=300,
        env=machine,
    )


def test_what_the_gpu_machine_lacks_cannot_be_imported_in_the_kits_rehearsal(machine):
    assert {"celery", "redis", "psycopg"} <= blocked_modules()  # on no GPU machine's image
    assert "torch" not in blocked_modules() and "diffusers" not in blocked_modules()
    probe = (
        "import diffusers, torch\n"
        "try:\n    import celery\nexcept ImportError:\n    print('no celery')"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=machine, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no celery"


def test_it_exits_cleanly_and_says_there_is_no_gpu(run):
    assert run.returncode == 0, run.stderr
    assert "CPU (no GPU)" in run.stdout


def test_the_last_line_is_images_per_hour_with_a_positive_number(run):
    last = run.stdout.strip().splitlines()[-1]
    match = LAST_LINE.fullmatch(last)
    assert match, last
    assert float(match.group(1)) > 0


def test_images_per_hour_is_the_fastest_configuration_measured(run):
    configs = [CONFIG_LINE.search(line) for line in run.stdout.splitlines()]
    configs = [match for match in configs if match]
    assert {int(match.group(1)) for match in configs} == {1, 2, 4}
    best = max(int(match.group(3)) for match in configs)
    reported = float(LAST_LINE.search(run.stdout).group(1))
    assert abs(reported - best) <= 1  # the table rounds to whole images per hour
    assert abs(reported - 3600 / min(float(m.group(2)) for m in configs)) / reported < 0.1


def test_fp8_is_refused_on_the_cpu_with_the_reason(run):
    assert "fp8: skipped, fp8 needs a CUDA GPU" in run.stdout


def test_the_render_stage_is_measured_with_the_png_on_and_off_the_model_thread(run):
    assert any(STAGE_LINE.search(line) for line in run.stdout.splitlines()), run.stdout


def test_the_render_figures_come_before_the_text_stages_and_each_role_has_its_peak(run):
    lines = run.stdout.splitlines()
    first_render = next(i for i, line in enumerate(lines) if CONFIG_LINE.search(line))
    translation = next(i for i, line in enumerate(lines) if line.startswith("translation:"))
    extraction = next(i for i, line in enumerate(lines) if line.startswith("extraction:"))
    assert first_render < translation < extraction
    assert "peak VRAM per worker role: n/a (CPU)" in run.stdout
