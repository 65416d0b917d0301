"""The report in a real headless Chromium: thumbnails decode and the controls work.

Chromium comes from ``.ci/browser``; without it these tests fail rather than skip, so a CI
machine that lost the browser cannot pass them silently.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from producer.report import write_report
from tests.unit.test_report import Elements, make_report_batch

pytestmark = [pytest.mark.integration, pytest.mark.own_services]

CHROMIUM = Path("/usr/bin/chromium")


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM of ``page`` after its scripts ran, as headless Chromium serialises it.

    Args:
        page: an HTML file.
        profile: an empty folder for the browser profile.

    Returns:
        The serialised DOM.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run .ci/browser to install Chromium")
    command = [
        str(CHROMIUM),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture
def page(tmp_path) -> tuple[Path, int, int]:
    batch = make_report_batch(tmp_path)
    with batch.sessions() as session:
        path = write_report(session, batch.batch_id, batch.output_dir)
    return path, len(batch.keys), batch.with_image


def test_every_thumbnail_decodes_in_chromium(page, tmp_path):
    path, articles, with_image = page
    dom = dump_dom(path, tmp_path / "profile")
    body = [a for t, a in Elements(dom).tags if t == "body"][0]
    assert body.get("data-thumbs-loaded") == str(with_image)
    assert f"{articles} of {articles} shown" in dom


def test_the_filter_and_sort_controls_rearrange_the_cards(page, tmp_path):
    path, articles, _ = page
    # The controls as a user would set them: below the batch threshold, lowest score first.
    driver = (
        "<script>for (const [id, value] of [['filter', 'below'], ['sort', 'score-asc']]) {"
        " const control = document.getElementById(id); control.value = value;"
        " control.dispatchEvent(new Event('input')); }</script>"
    )
    driven = path.with_name("driven.html")
    driven.write_text(path.read_text(encoding="utf-8").replace("</body>", driver + "</body>"))
    dom = dump_dom(driven, tmp_path / "profile")
    cards = Elements(dom).find("article", "card")
    visible = [c["data-key"] for c in cards if "hidden" not in c]
    assert visible == ["SKU-2", "SKU-4"]  # 0.18 and 0.22, under the threshold of 0.25
    assert re.search(rf"\b2 of {articles} shown\b", dom)
