"""The studio's page in Debian's chromium, driven by Playwright: the browser and the page server
the browser tests share (module-scoped fixtures, registered by conftest), and the steps a person
takes (open a tab, wait for a text, pick a model folder, upload)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import ROOT, start_page, stop_jobs

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    """One page for the module's tests (a start takes 10-20 s on two cores). Each test opens
    its own browser context, so the form a test leaves in the browser's storage is not the
    next one's, and names its runs itself."""
    s = start_page(tmp_path_factory.mktemp("browser") / "runs")
    yield s
    s.stop()
    stop_jobs(s.runs_dir)


@pytest.fixture(autouse=True)
def jobs_stopped_after_each_test(request):
    """The page allows one job at a time: what a test leaves training is stopped after it."""
    yield
    if "page_server" in request.fixturenames:
        stop_jobs(request.getfixturevalue("page_server").runs_dir)


def open_page(browser, url: str, locale: str = "en-US", width: int = 1440, height: int = 1000):
    """The page in a browser whose language is `locale` (Accept-Language, navigator.language)."""
    page = browser.new_page(viewport={"width": width, "height": height}, locale=locale)
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#tab-data", state="attached")
    return page


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def tab_at(page, index: int) -> None:
    """Open the index-th tab whatever language its name is in (on a narrow page, the tabs that
    do not fit are in the "More tabs" menu)."""
    shown = page.locator("button[role=tab]")
    if index < shown.count():
        shown.nth(index).click()
    else:
        page.locator(".overflow-menu > button").click()
        page.locator(".overflow-dropdown button").nth(index - shown.count()).click()
    page.wait_for_timeout(1500)


def wait_text(page, selector: str, text: str, timeout: float = 60) -> str:
    page.wait_for_function(
        "([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
        arg=[selector, text], timeout=timeout * 1000)
    return page.locator(selector).inner_text()


def text_input(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def points(page) -> int:
    """Markers drawn on the loss chart (plotly draws one path per point)."""
    return page.locator("#loss-chart .scatterlayer .points path").count()


def use_model_folder(page, folder: str) -> None:
    """The model folder picked on the Model tab (found by place: any language)."""
    tab_at(page, 1)
    text_input(page, "model-folder").fill(folder)
    page.locator("#use-folder").click()
    page.wait_for_function("f => document.querySelector('#model-name input').value.includes(f)",
                           arg=folder)


def upload(page, path: Path) -> str:
    tab(page, "1 · Data")
    page.locator("#data-upload input[type=file]").set_input_files(str(path))
    return wait_text(page, "#data-status", path.name.split(".")[0], timeout=90)


def shot(page, name: str) -> None:
    DOCS.mkdir(exist_ok=True)
    page.mouse.move(0, 0)       # no hover highlight in the picture
    page.screenshot(path=str(DOCS / f"screenshot-{name}.png"), full_page=True)
