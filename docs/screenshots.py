"""Screenshots of the review studio for the README: `make screenshots`.

Runs `farm demo --min-clip-score 0` (tiny random-weight models, SQLite, no service) in a
scratch folder, so that articles scoring below 0 get all their render attempts; adds a studio
user, serves the studio, approves two articles through the page and photographs the contact
sheet and an article page in the system Chromium (.ci/browser). The pictures are what the
tiny models make: noise, not fashion; the page around them is the studio as it is.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.integration.farmproc import farm  # noqa: E402
from tests.integration.studio import CHROMIUM, Studio, add_user  # noqa: E402

USER, PASSWORD = "merch", "screenshot-passwort"


def main(argv: list[str] | None = None) -> int:
    """Make ``contact-sheet.png`` and ``article.png`` in the chosen folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    if not os.access(CHROMIUM, os.X_OK):
        print(f"{CHROMIUM} is missing: run .ci/browser (or make browser)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="farm-shots-") as scratch:
        env = _environment(Path(scratch))
        demo = farm(env, "demo", "--min-clip-score", "0", timeout=900)
        if demo.returncode != 0:
            print(demo.stderr, file=sys.stderr)
            return 1
        batch_id = demo.stdout.split()[-1]
        add_user(env, USER, PASSWORD, "admin")
        studio = Studio(env, Path(scratch) / "studio.log").wait_ready()
        try:
            _photograph(studio.url, batch_id, args.out)
        finally:
            studio.stop()
    print(f"wrote {args.out / 'contact-sheet.png'} and {args.out / 'article.png'}")
    return 0


def _environment(scratch: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    return env | {
        "FARM_DATABASE_URL": f"sqlite:///{scratch / 'farm.db'}",
        "FARM_OUTPUT_DIR": str(scratch / "output"),
        "FARM_PROFILE": "tiny",
        "HF_HUB_OFFLINE": "1",
    }


def _photograph(url: str, batch_id: str, out: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{url}/login")
        page.fill("#login-form input[name=name]", USER)
        page.fill("#login-form input[name=password]", PASSWORD)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(f"{url}/")
        page.goto(f"{url}/batches/{batch_id}?sort=score")
        links = page.locator("article.product h2 a")
        articles = [links.nth(i).get_attribute("href") for i in (0, 1)]
        for article in articles:  # a verdict and a history to show
            page.goto(url + article)
            page.click("#approve-form button[type=submit]")
            page.wait_for_load_state("networkidle")
        page.goto(f"{url}/batches/{batch_id}?sort=score")
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(out / "contact-sheet.png"))
        page.goto(url + articles[0])
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(out / "article.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
