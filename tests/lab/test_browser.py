"""The profiler UI as a user sees it: TensorBoard and the offline viewer in a real Chromium.

Chromium is Debian's (or the runner's Chrome), driven by Playwright's Python API through
``executable_path``; Playwright's own browser download cannot work offline. The browser
reaches nothing but loopback and ``file://``: every other request is answered here, by a
stand-in from ``tests/lab/browser_standins/`` or by a network error, and recorded.

What a user can rely on offline, as these tests show it:

* TensorBoard's profiler page waits for Google Charts before it asks for any view; with
  no internet that script never arrives and the page never requests its data.
* With Google Charts and the web-components polyfill stood in, the pickers, the Operator
  table and the Trace timeline render; the charts stay blank.
* ``pm-core view`` (speedscope, fetched once with npm) opens a trace with no network.

Screenshots go to ``profiles/report/browser/`` (or ``$PM_CORE_SCREENSHOTS``); the report
links them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from pm_core.lab.profiling import MEASURED_STEPS, run_profiles
from pm_core.lab.trace_viewer import ViewerUnavailable, fetch_speedscope, viewer_url

from .tensorboard_server import API, get, serve

pytest.importorskip("tensorboard")
pytest.importorskip("torch_tb_profiler")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

# one worker runs the whole module: one TensorBoard and one Chromium, not one per worker
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

STANDINS = Path(__file__).parent / "browser_standins"
GOOGLE_CHARTS = "https://www.gstatic.com/charts/loader.js"
POLYFILL = "https://cdnjs.cloudflare.com/ajax/libs/webcomponentsjs/0.7.24/webcomponents.min.js"
POLYFILL_SHA256 = "3858273ab39b299e7c2227f0830534afafaabf4a572c9ea73c2076fecbd8978c"
LOOPBACK = re.compile(r"^http://127\.0\.0\.1[:/]")
#: Every wait for the page has this bound; each step takes 1-5 s on a 2-core VM.
UI_TIMEOUT_MS = 60_000
IMPLS = ("slice", "conv")
#: An op that only that impl's forward or backward runs, as the Operator table names it.
OWN_OP = {"slice": "aten::cat", "conv": "aten::convolution"}
#: The plugin's page and scripts, as opposed to its data routes (/runs, /views, ...).
PLUGIN_STATIC = {"/index.js", "/index.html", "/trace_viewer_full.html", "/trace_embedding.html"}
#: The data routes behind the Runs, Views and Workers pickers (and the span list).
PICKER_ROUTES = {"/runs", "/views", "/workers", "/spans"}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _chromium() -> str | None:
    explicit = os.environ.get("PM_CORE_CHROMIUM")
    if explicit:
        return explicit
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


CHROMIUM = _chromium()
if CHROMIUM is None:
    pytest.skip(
        "no Chromium found (looked for $PM_CORE_CHROMIUM, " + ", ".join(CHROMIUM_NAMES) + "); "
        "Debian/Ubuntu: apt-get install chromium (.ci/run does)",
        allow_module_level=True,
    )


def _screenshot_dir() -> Path:
    env = os.environ.get("PM_CORE_SCREENSHOTS")
    out = Path(env) if env else Path(__file__).resolve().parents[2] / "profiles/report/browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return run_profiles(
        tmp_path_factory.mktemp("profiles"),
        impls=list(IMPLS), norms=["pre"], dtypes=[torch.float32], shapes=[(1, 8, 8, 8)],
    )  # fmt: skip


@pytest.fixture(scope="module")
def tensorboard(traces: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("tb") / "tensorboard.log"
    with serve(traces[0].parent, log, len(traces)) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


class Offline:
    """Routes a page's non-loopback requests: stand-ins where given, else a network error.
    ``blocked`` and ``served`` record the URLs; ``api`` the plugin API routes requested."""

    def __init__(self, page: Any, standins: dict[str, Path]) -> None:
        self.standins = standins
        self.blocked: list[str] = []
        self.served: list[str] = []
        self.api: list[str] = []
        # loopback and file:// are left alone (routing loopback through Playwright stalls
        # the plugin's iframe); any other http(s) request is answered here
        page.context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), self._route)
        page.on("request", self._record)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url in self.standins:
            self.served.append(url)
            route.fulfill(path=str(self.standins[url]), content_type="text/javascript")
        else:
            self.blocked.append(url)
            route.abort("internetdisconnected")

    def _record(self, request: Any) -> None:
        if LOOPBACK.match(request.url) and API in request.url:
            route = request.url.split(API, 1)[1].split("?", 1)[0]
            if route not in PLUGIN_STATIC:
                self.api.append(route)


STANDINS_BY_URL = {
    GOOGLE_CHARTS: STANDINS / "google-charts-stub.js",
    POLYFILL: STANDINS / "webcomponents-0.7.24.min.js",
}


def test_the_vendored_polyfill_is_the_published_one() -> None:
    """The stand-in is byte for byte webcomponents.js 0.7.24's webcomponents.min.js."""
    data = (STANDINS / "webcomponents-0.7.24.min.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == POLYFILL_SHA256
    assert b"@version 0.7.24" in data[:1000]


def test_offline_the_pickers_work_and_no_view_ever_loads(
    browser: Any, tensorboard: str, traces: list[Path]
) -> None:
    """With no internet the Runs, Views and Workers pickers fill in, but the page never
    asks for any view's data (Overview, Operator, Trace, Memory) and shows none: its
    views wait for Google Charts, which never arrives. This is what a user sees offline."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    net = Offline(page, {})
    try:
        page.goto(f"{tensorboard}/#pytorch_profiler")
        ui = ProfilerPage(page)
        assert sorted(ui.options(0)) == sorted(p.name for p in traces)
        for view in ("Operator", "Trace", "Memory"):
            ui.choose(1, view)
            # a wait, not a proof: the stand-in tests below see the same choice load data
            page.wait_for_timeout(2_000)
        assert GOOGLE_CHARTS in net.blocked, net.blocked
        assert set(net.api) <= PICKER_ROUTES, f"a view's data was requested: {net.api}"
        assert ui.frame.get_by_text("Configuration").count() == 0
        page.screenshot(path=str(_screenshot_dir() / "tensorboard-offline.png"))
    finally:
        page.close()


class ProfilerPage:
    """The plugin page inside TensorBoard, driven through its pickers as a user would."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.frame = page.frame_locator("iframe")
        self.pickers = self.frame.locator("[aria-haspopup=listbox]")  # Runs, Views, Workers

    def options(self, picker: int) -> list[str]:
        self.pickers.nth(picker).click()
        opts = self.frame.locator("[role=listbox] [role=option]")
        opts.first.wait_for(timeout=UI_TIMEOUT_MS)
        texts: list[str] = opts.all_inner_texts()
        self.page.keyboard.press("Escape")
        self.frame.locator("[role=listbox]").wait_for(state="detached", timeout=UI_TIMEOUT_MS)
        return texts

    def choose(self, picker: int, text: str) -> None:
        self.pickers.nth(picker).click()
        exact = re.compile(f"^{re.escape(text)}$")
        self.frame.locator("[role=listbox] [role=option]", has_text=exact).click()


@pytest.fixture
def profiler_page(browser: Any, tensorboard: str) -> Iterator[tuple[ProfilerPage, Offline]]:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    net = Offline(page, STANDINS_BY_URL)
    page.goto(f"{tensorboard}/#pytorch_profiler")
    ui = ProfilerPage(page)
    ui.frame.get_by_text("Configuration").wait_for(timeout=UI_TIMEOUT_MS)
    try:
        yield ui, net
    finally:
        page.close()


def test_pickers_offer_our_runs_and_the_plugins_views(
    profiler_page: tuple[ProfilerPage, Offline], tensorboard: str, traces: list[Path]
) -> None:
    """The Runs picker lists the project's runs; the Views picker offers exactly the views
    the plugin's API has for the run (Overview, Operator, Trace, Memory here)."""
    ui, net = profiler_page
    assert sorted(ui.options(0)) == sorted(p.name for p in traces)
    for run in sorted(p.name for p in traces):
        ui.choose(0, run)
        expected = get(tensorboard, "/views", run=run)
        ui.frame.locator("[aria-haspopup=listbox]").nth(1).filter(has_text=expected[0]).wait_for(
            timeout=UI_TIMEOUT_MS
        )
        assert ui.options(1) == expected
    assert sorted(net.served) == sorted([GOOGLE_CHARTS]), net.served
    assert net.blocked == [], f"unexpected requests off this machine: {net.blocked}"


@pytest.mark.parametrize("impl", IMPLS)
def test_operator_table_lists_the_impls_own_ops(
    profiler_page: tuple[ProfilerPage, Offline], impl: str
) -> None:
    """Searching the Operator table by name finds the op that only this impl runs."""
    ui, _ = profiler_page
    run = f"{impl}-pre-float32-1x8x8x8"
    ui.choose(0, run)
    ui.choose(1, "Operator")
    op = OWN_OP[impl]
    ui.frame.get_by_role("searchbox").fill(op.removeprefix("aten::"))  # "Search by Name"
    names = ui.frame.locator(".ant-table-tbody tr td:first-child")
    names.filter(has_text=re.compile(f"^{re.escape(op)}$")).wait_for(timeout=UI_TIMEOUT_MS)
    assert op in names.all_inner_texts()
    ui.page.screenshot(path=str(_screenshot_dir() / f"tensorboard-operator-{impl}.png"))


@pytest.mark.parametrize("impl", IMPLS)
def test_trace_timeline_shows_the_measured_steps_and_ranges(
    profiler_page: tuple[ProfilerPage, Offline], impl: str
) -> None:
    """The Trace view's timeline model holds ProfilerStep#2 and #3 (the measured steps,
    no warm-up) and the impl's forward and backward ranges."""
    ui, net = profiler_page
    ui.choose(0, f"{impl}-pre-float32-1x8x8x8")
    ui.choose(1, "Trace")
    viewer = ui.frame.frame_locator("iframe").locator("tr-ui-timeline-view")
    viewer.wait_for(state="attached", timeout=UI_TIMEOUT_MS)
    (trace,) = [f for f in ui.page.frames if f.url.endswith("/trace_embedding.html")]
    has_model = "() => { const v = document.querySelector('tr-ui-timeline-view'); return !!(v && v.model); }"
    trace.wait_for_function(has_model, timeout=UI_TIMEOUT_MS)
    titles: list[str] = trace.evaluate(
        """() => {
            const names = new Set();
            const model = document.querySelector('tr-ui-timeline-view').model;
            for (const t of model.getAllThreads())
                for (const s of t.sliceGroup.slices) names.add(s.title);
            return [...names];
        }"""
    )
    steps = sorted(t for t in titles if t.startswith("ProfilerStep#"))
    assert steps == list(MEASURED_STEPS)
    ranges = {f"patch_merge/{impl}/pre/forward", f"patch_merge/{impl}/pre/backward"}
    assert ranges <= set(titles), sorted(titles)
    assert POLYFILL in net.served
    ui.page.wait_for_timeout(1_000)  # let the canvas paint before the screenshot
    ui.page.screenshot(path=str(_screenshot_dir() / f"tensorboard-trace-{impl}.png"))


@pytest.fixture(scope="module")
def speedscope(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return fetch_speedscope(tmp_path_factory.mktemp("cache"))
    except ViewerUnavailable as e:
        pytest.skip(str(e))


def test_offline_viewer_opens_a_project_trace(
    browser: Any, speedscope: Path, traces: list[Path], tmp_path: Path
) -> None:
    """speedscope opens a pm-core trace from file:// with every network request refused:
    it imports the file, and its Sandwich table lists the impl's ranges and ops."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    net = Offline(page, {})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        run = next(p for p in traces if p.name.startswith("conv-"))
        page.goto(viewer_url(run, speedscope, tmp_path))
        page.wait_for_function(
            "() => document.title.includes('.pt.trace') && document.title.includes('speedscope')",
            timeout=UI_TIMEOUT_MS,
        )
        page.get_by_text("Sandwich").click()
        for name in (
            "patch_merge/conv/pre/forward",
            "patch_merge/conv/pre/backward",
            *MEASURED_STEPS,
        ):
            cell = page.get_by_text(name, exact=True).first
            cell.wait_for(timeout=UI_TIMEOUT_MS)
        assert "Something went wrong" not in page.locator("body").inner_text()
        page.screenshot(path=str(_screenshot_dir() / "speedscope-sandwich-conv.png"))
        page.get_by_text("Time Order").click()
        page.wait_for_timeout(1_000)
        page.screenshot(path=str(_screenshot_dir() / "speedscope-timeline-conv.png"))
        assert net.blocked == [], f"the offline viewer reached for the network: {net.blocked}"
        assert errors == []
    finally:
        page.close()
