"""Take the README's screenshots from the running app in headless Chromium.

Usage: .venv/bin/python docs/screenshots.py [--db .sieve/demo.duckdb]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import chromium_page, running_app, wait_for_app  # noqa: E402

SHOTS = [  # (file, url path, dataset to pick in the sidebar, selector that shows it is drawn)
    ("overview.png", "/", "cifar10", ".sieve-grid img"),
    ("overview-bccd.png", "/", "bccd", ".sieve-grid img"),
    ("balance-bccd.png", "/balance", "bccd", ".js-plotly-plot"),
    ("balance-cifar10.png", "/balance", "cifar10", ".js-plotly-plot"),
]


def pick_dataset(page, name: str) -> None:
    box = page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first
    box.click()
    page.get_by_role("option", name=name, exact=True).click()
    wait_for_app(page)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default=str(ROOT / ".sieve" / "demo.duckdb"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with running_app(args.db) as url, chromium_page(height=2000) as page:
        for name, path, dataset, drawn in SHOTS:
            page.goto(url + path)
            wait_for_app(page)
            pick_dataset(page, dataset)
            page.wait_for_selector(drawn, timeout=60_000)
            wait_for_app(page)
            page.screenshot(path=str(out / name), full_page=True)
            print("wrote", out / name)


if __name__ == "__main__":
    main()
