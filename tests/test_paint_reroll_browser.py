"""The paint page's "Re-roll class" button (per-class noise, `region_seeds`) in headless Chromium.

Skipped with test_app_browser's conditions (Playwright, /usr/bin/chromium). The fake backend
supports region seeds and records what the page sent.
"""

import numpy as np
import pytest

from test_app_browser import SKY, RecordingBackend, browser, open_page, serving  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser


class RegionBackend(RecordingBackend):
    """RecordingBackend with per-class noise: remembers the seeds and region seeds of each call."""

    supports_region_seeds = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[list, list | None]] = []

    def synthesize_batch(self, labels, seeds, styles, region_seeds=None):
        self.calls.append((list(seeds), region_seeds))
        return super().synthesize_batch(labels, seeds, styles)


def test_reroll_class_sends_one_class_seed_and_keeps_the_image_seed(browser):  # noqa: F811
    backend = RegionBackend()
    with serving(backend) as url, open_page(browser, url) as page:
        assert page.locator("#reroll-class").is_visible()
        page.click(f".swatch[data-id='{SKY}']")
        seed_before = page.evaluate("window.spadegan.lastSeed")
        version = page.evaluate("window.spadegan.imageVersion")
        page.click("#reroll-class")
        page.wait_for_function(f"window.spadegan.imageVersion > {version}", timeout=15000)
        seeds, regions = backend.calls[-1]
        assert seeds == [seed_before] and regions is not None and list(regions[0]) == [SKY]
        assert 0 <= regions[0][SKY] < 2**32
        version = page.evaluate("window.spadegan.imageVersion")
        page.click("#new-style")  # a new look everywhere: the region seeds are dropped
        page.wait_for_function(f"window.spadegan.imageVersion > {version}", timeout=15000)
        assert backend.calls[-1][1] is None and backend.calls[-1][0] != [seed_before]


def test_reroll_button_hidden_without_per_class_noise(browser):  # noqa: F811
    with serving(RecordingBackend()) as url, open_page(browser, url) as page:
        assert page.locator("#reroll-class").is_hidden()
        assert np.asarray(page.evaluate("window.spadegan.info.region_seeds")) == np.asarray(False)
