"""End to end: the real Streamlit app (``dermxai app``) driven in headless Chromium with Playwright.

Needs /usr/bin/chromium (Debian ``chromium``; `.ci/run` installs it) and the ``playwright`` package; skipped
with the reason otherwise. Screenshots go to artifacts/browser/ (git-ignored).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dermxai.assets import DEFAULT_MODEL, EXAMPLES
from dermxai.inference.predictor import Predictor

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "browser"
EXAMPLE = next(EXAMPLES.glob("mel_*.jpg"))
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 180_000  # the CPU may be shared: loading the model and the first CAM can take a while


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@contextmanager
def serve_until_healthy(command: Callable[[int], list[str]], cwd: Path, env: dict, log_path: Path) -> Iterator[str]:
    """Run ``command(port)`` (a Streamlit server) on a free loopback port; yield its URL once healthy."""
    port = free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command(port), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    time.sleep(0.5)
                if server.poll() is not None:
                    pytest.fail(f"streamlit exited with {server.returncode}; see {log_path}")
            else:
                pytest.fail(f"streamlit did not answer on {url} within 120 s; see {log_path}")
            yield url
        finally:
            os.killpg(server.pid, 15)
            server.wait(30)


@contextmanager
def serve_app(log_path: Path, model: Path | None = None) -> Iterator[str]:
    """``dermxai app`` (streamlit run) on a free loopback port, on ``model`` (default: the bundled model)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("DERMXAI_MODEL", None)
    if model is not None:
        env["DERMXAI_MODEL"] = str(model)

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "dermxai.cli", "app", "--port", str(port), "--address", "127.0.0.1"]

    with serve_until_healthy(command, ROOT, env, log_path) as url:
        yield url


def phone_page(browser, url: str):
    """A phone-sized page on ``url``, once the app has drawn its disclaimer."""
    page = browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_text("Not a medical device.", exact=True).wait_for()
    return page


@pytest.fixture(scope="module")
def app_url():
    """The app with the default model, until the module's tests end."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    with serve_app(SHOTS / "streamlit.log") as url:
        yield url


def assert_clear_of_the_header(page, heading) -> None:
    """The class name is on screen below Streamlit's fixed header bar, not scrolled under it."""
    header = page.locator('[data-testid="stHeader"]').bounding_box()
    box = heading.bounding_box()
    bottom = header["y"] + header["height"] if header else 0
    assert box is not None and box["y"] >= bottom - 1, ("class name under the header", box, header)


def test_upload_shows_class_chart_and_heatmap_then_a_friendly_error(browser, app_url, tmp_path):
    served = Predictor(DEFAULT_MODEL)
    expected = served.predict(EXAMPLE.read_bytes()).top_class
    page = browser.new_page(viewport=DESKTOP)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.get_by_text("Not a medical device.", exact=True).wait_for()
    page.locator('input[type="file"]').set_input_files(str(EXAMPLE))

    heading = page.get_by_role("heading", name="Most similar to")
    heading.wait_for()
    assert heading.inner_text().endswith(f"· {expected}")  # one bracket pair at most: "name · code"
    page.get_by_text("Malignant score").wait_for()
    chart = page.locator('[data-testid="stVegaLiteChart"]')
    chart.wait_for()
    assert chart.bounding_box()["height"] > 100
    heatmap = page.locator('[data-testid="stImage"]').filter(has_text="heatmap for")
    heatmap.wait_for()
    page.get_by_text("against lesion masks").wait_for()  # which heatmap method was validated, if any
    page.get_by_text("most influence").wait_for()  # the colour scale
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stImage] img')].some(i => i.complete && i.naturalWidth >= 100)"
    )
    page.wait_for_timeout(1500)  # let the chart finish drawing (and the scroll into view) for the screenshot
    assert_clear_of_the_header(page, heading)
    page.screenshot(path=str(SHOTS / "app.png"), full_page=True)

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(EXAMPLE.read_bytes()[:300])
    page.locator('input[type="file"]').set_input_files(str(corrupt))
    error = page.locator('[data-testid="stAlertContentError"]').filter(has_text="corrupt.jpg")
    error.wait_for()
    text = error.inner_text()
    assert "Could not use corrupt.jpg" in text and "damaged or incomplete" in text and "Traceback" not in text
    page.get_by_role("heading", name="Most similar to").wait_for(state="detached", timeout=30_000)  # no stale result
    page.screenshot(path=str(SHOTS / "error.png"), full_page=True)

    page.get_by_text("Example images").click()
    page.get_by_role("radio", name="bcc", exact=True).click()
    page.get_by_role("heading", name="Most similar to").wait_for()
    page.close()


def document_png(path: Path) -> Path:
    """A rendered document page: plainly not a dermoscopic image."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (800, 600), "white")
    draw = ImageDraw.Draw(image)
    for line in range(12):
        draw.text((40, 30 + 45 * line), "Invoice 2026-118: total due 1,240.00 EUR", fill="black", font_size=28)
    image.save(path)
    return path


def test_a_non_dermoscopic_upload_gets_no_class_chart_or_advice(browser, app_url, tmp_path):
    page = browser.new_page(viewport=DESKTOP)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.get_by_text("Not a medical device.", exact=True).wait_for()
    page.locator('input[type="file"]').set_input_files(str(document_png(tmp_path / "invoice.png")))
    page.get_by_text("does not look like a dermoscopic image of a single skin lesion").wait_for()
    page.locator('[data-testid="stImage"]').filter(has_text="Your image").wait_for()  # the upload stays in view
    page.wait_for_timeout(1500)
    assert page.get_by_role("heading", name="Most similar to").count() == 0
    assert page.get_by_text("Malignant score").count() == 0 and page.get_by_text("What to do.").count() == 0
    assert page.locator('[data-testid="stVegaLiteChart"]').count() == 0
    page.screenshot(path=str(SHOTS / "withheld.png"), full_page=True)
    page.close()


def test_on_a_phone_an_example_shows_its_true_label_and_the_answer_is_in_the_first_screen(browser, app_url):
    page = phone_page(browser, app_url)
    page.get_by_text("Example images").first.click()
    buttons = [page.get_by_role("radio", name=p.stem.split("_", 1)[0], exact=True) for p in EXAMPLES.glob("*.jpg")]
    rows = {round(b.bounding_box()["y"]) for b in buttons}
    assert len(rows) <= 2, rows  # a compact row (or two) of small buttons, not a full-width stack
    page.get_by_role("radio", name="mel", exact=True).tap()
    heading = page.get_by_role("heading", name="Most similar to")
    heading.wait_for()
    truth = page.locator("p", has_text="True diagnosis of this example")
    truth.wait_for()
    assert "Melanoma" in truth.inner_text() and "the model got it" in truth.inner_text()
    flag = page.locator('[data-testid="stAlert"]').filter(has_text="Malignant score")
    chart = page.locator('[data-testid="stVegaLiteChart"]')
    chart.wait_for()
    page.wait_for_timeout(1000)  # the scroll into view
    assert_clear_of_the_header(page, heading)
    for name, element in (("class", heading), ("malignant flag", flag), ("chart", chart)):
        box = element.bounding_box()  # relative to the viewport, at the current scroll position
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], (name, box)
    page.screenshot(path=str(SHOTS / "phone.png"))
    page.close()


def test_on_a_phone_a_square_upload_gets_a_square_heatmap_with_a_colour_scale(browser, app_url, tmp_path):
    from PIL import Image

    square = tmp_path / "square.jpg"
    Image.open(EXAMPLE).crop((25, 0, 175, 150)).save(square, quality=95)
    page = phone_page(browser, app_url)
    page.locator('input[type="file"]').set_input_files(str(square))
    page.get_by_role("heading", name="Most similar to").wait_for()
    heatmap = page.locator('[data-testid="stImage"]').filter(has_text="heatmap for").locator("img")
    heatmap.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stImage] img')].every(i => i.complete && i.naturalWidth)"
    )
    width, height = heatmap.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert width == height, (width, height)  # the upload's aspect, not the model's 4:3
    page.get_by_text("most influence").wait_for()
    page.get_by_text("little influence").wait_for()
    heatmap.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "phone_heatmap.png"))
    page.close()


@pytest.fixture(scope="module")
def unsure_app_url(tmp_path_factory, fixture_dir):
    """The app on a copy of the default bundle that is unsure of everything and has a small feature index."""
    import shutil

    from PIL import Image

    from dermxai.evaluation.gate import _open, features_of
    from dermxai.inference.similar import fit_index, write_thumbnails
    from dermxai.models.bundle import read_config, update_config

    root = tmp_path_factory.mktemp("unsure")
    bundle = Path(shutil.copytree(DEFAULT_MODEL, root / "unsure_model"))
    update_config(bundle, abstain={**read_config(bundle).abstain, "min_confidence": 0.9999})
    paths = sorted(fixture_dir.rglob("*.jpg"))[:12]
    features = features_of(Predictor(bundle), _open(map(str, paths)))
    fit_index(features, [p.stem for p in paths], [p.stem for p in paths], ["bkl"] * len(paths), 8).save(bundle)
    write_thumbnails(bundle, ((p.stem, Image.open(p)) for p in paths))
    with serve_app(root / "streamlit.log", bundle) as url:
        yield url


def test_an_uncertain_upload_shows_a_differential_and_similar_cases(browser, unsure_app_url):
    page = phone_page(browser, unsure_app_url)
    page.locator('input[type="file"]').set_input_files(str(EXAMPLE))
    page.get_by_role("heading", name="Most similar to").wait_for()  # an uncertain answer is still an answer
    note = page.locator('[data-testid="stAlert"]').filter(has_text="Uncertain.")
    note.wait_for()
    assert "It could be" in note.inner_text() and "%" in note.inner_text() and "energy" not in note.inner_text()
    page.get_by_text("Similar confirmed cases").wait_for()
    thumbnails = page.locator('[data-testid="stImage"]').filter(has_text="bkl ·").locator("img")
    thumbnails.first.wait_for()
    assert thumbnails.count() == 6
    note.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "phone_uncertain.png"), full_page=True)
    page.close()


@pytest.fixture(scope="module")
def wary_app_url(tmp_path_factory):
    """The app on a copy of the default bundle whose gate withholds every image."""
    import shutil
    from dataclasses import replace

    from dermxai.inference.feature_gate import load_gate

    root = tmp_path_factory.mktemp("wary")
    bundle = Path(shutil.copytree(DEFAULT_MODEL, root / "wary_model"))
    replace(load_gate(bundle), threshold=1e-6, class_thresholds=None).save(bundle)
    with serve_app(root / "streamlit.log", bundle) as url:
        yield url


def test_on_a_phone_a_withheld_example_still_shows_its_true_label_and_image(browser, wary_app_url):
    page = phone_page(browser, wary_app_url)
    page.get_by_text("Example images").first.click()
    page.get_by_role("radio", name="bcc", exact=True).tap()
    page.get_by_text("No answer.").wait_for()
    truth = page.locator("p", has_text="True diagnosis of this example")
    truth.wait_for()
    assert "Basal cell carcinoma" in truth.inner_text() and "the model got it" not in truth.inner_text()
    page.locator('[data-testid="stImage"]').filter(has_text="Your image").wait_for()
    assert page.get_by_role("heading", name="Most similar to").count() == 0
    assert page.get_by_text("energy").count() == 0  # plain words only
    page.close()
