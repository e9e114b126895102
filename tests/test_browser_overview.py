"""The Overview's problem list in a real browser (headless Debian Chromium through Playwright):
the CSV download has every problem, not only the 1,000 the page shows."""
from __future__ import annotations

import re

import pandas as pd

from tests.browser import chromium_page, running_app, wait_for_app
from tests.test_pages import loose_images_catalog


def test_overview_downloads_every_problem_as_csv(tmp_path):
    db = loose_images_catalog(tmp_path)
    with running_app(db) as url, chromium_page() as page:
        page.goto(url)
        wait_for_app(page)
        with page.expect_download(timeout=60_000) as download:
            page.get_by_text("Download all 1,005 (CSV)").click()
        saved = tmp_path / "problems.csv"
        download.value.save_as(saved)
        assert download.value.suggested_filename == "pets-problems.csv"
    problems = pd.read_csv(saved)
    assert len(problems) == 1005 and set(problems["action"]) == {"noted"}
    pattern = re.escape(f"{tmp_path}/pets/") + r"loose_\d{4}\.png"
    assert problems["file"].str.fullmatch(pattern).all()
