"""Screenshots of the article page's keys and compare view for the README.

``python -m docs.keyboard_screenshots`` runs the keyboard browser tests
(tests/integration/test_studio_keyboard.py: the studio over a stored test batch, Redis as
broker, the system Chromium) with ``FARM_STUDIO_SHOTS`` set, so they save
``article-keys.png`` and ``article-compare.png`` as they go. The pictures are flat test
colours; the page around them is the studio as it is.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = "tests/integration/test_studio_keyboard.py"


def main(argv: list[str] | None = None) -> int:
    """Write the two screenshots into ``--out`` (docs/screenshots by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    env = os.environ | {"FARM_STUDIO_SHOTS": str(args.out.resolve())}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TESTS]
    result = subprocess.run(command, cwd=ROOT, env=env)
    if result.returncode == 0:
        print(f"wrote {args.out / 'article-keys.png'} and {args.out / 'article-compare.png'}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
