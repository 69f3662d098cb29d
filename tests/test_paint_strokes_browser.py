"""The paint page with stroke previews in headless Chromium, over the built-in model: drawing
shows previews (the marker on), pausing brings the exact image (marker off), which equals
`Synthesizer.synthesize` of the map drawn. Skipped without Playwright or /usr/bin/chromium."""

import numpy as np
import pytest

from test_app_browser import browser, open_page, serving, shown_image, stroke  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def paint_server():
    from spadegan.app.adapter import AppBackend
    from spadegan.synthesize import Synthesizer, builtin_checkpoint

    syn = Synthesizer.from_checkpoint(builtin_checkpoint(), device="cpu", precision="fp32")
    backend = AppBackend(syn)
    with serving(backend) as url:
        yield url, backend, syn


def test_draw_sees_preview_then_exact_image(browser, paint_server):  # noqa: F811
    url, backend, syn = paint_server
    with open_page(browser, url) as pg:
        assert pg.evaluate("window.spadegan.info.previews") is True
        finals = pg.evaluate("window.spadegan.finals")
        pg.evaluate("window.spadegan.selectClass(2)")
        stroke(pg, [(0.3, 0.5), (0.45, 0.55), (0.6, 0.5)])
        pg.wait_for_function("window.spadegan.previews >= 1", timeout=15000)
        # the exact image follows the pause and replaces the preview
        pg.wait_for_function(f"window.spadegan.finals > {finals} && !window.spadegan.showingPreview "
                             "&& window.spadegan.requestsSent === window.spadegan.responses", timeout=15000)
        assert pg.locator("#preview-badge").is_hidden()
        assert pg.get_attribute("#download-result", "aria-disabled") == "false"
        ids = np.array(pg.evaluate("Array.from(window.spadegan.ids)"), dtype=np.int64)
        label = ids.reshape(syn.height, syn.width)
        assert (label == 2).sum() > 0
        seed = pg.evaluate("window.spadegan.lastSeed")
        _, shown = shown_image(pg)
        assert np.array_equal(shown, syn.synthesize(label, seed=seed, output="numpy"))
        assert backend.sessions.stats()["painters"] == 1
