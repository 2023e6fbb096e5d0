"""Open the generated HTML report in a real headless Chromium and check what a person sees.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``) and selenium; skipped with the reason when any is missing. Selenium
uses /usr/bin/chromedriver and never downloads a driver. Leaves a screenshot at
reports/screenshot-report.png.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.test_report import PRICES_YAML, rich_records

ROOT = Path(__file__).resolve().parent.parent
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = ROOT / "reports" / "screenshot-report.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def driver():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary = _chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium chromium-driver)")
    if not CHROMEDRIVER.exists():
        pytest.skip(f"{CHROMEDRIVER} is missing (apt-get install -y chromium-driver)")
    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    opts = Options()
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument("--window-size=1400,1000")
    opts.binary_location = binary
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    from harness import report

    tmp = tmp_path_factory.mktemp("browser")
    prices = tmp / "prices.yaml"
    prices.write_text(PRICES_YAML, encoding="utf-8")
    r = report.build(rich_records(), prices=prices)
    (path,) = report.write(r, tmp / "report.html", ["html"])
    return r, path


def _wait(drv, script: str, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = drv.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    return drv.execute_script(script)


def test_report_renders_in_chromium(driver, rendered):
    r, path = rendered
    driver.get(path.as_uri())
    state = _wait(driver, "return window.benchChartsDone ? 'done' : (window.benchChartsError || '')")
    assert state == "done", f"plotly did not finish drawing: {state!r}"

    # one plotly root per chart, each with data traces and a drawn SVG
    roots = driver.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot')).map(function(e){"
        "return [e.id, (e.data||[]).length, e.querySelectorAll('.main-svg').length,"
        " e.querySelectorAll('.trace, .hm, .heatmaplayer image').length];});")
    assert [root[0] for root in roots] == [f"chart-{name}" for name in r.figures]
    assert len(roots) == 6
    for chart_id, n_data, n_svg, n_drawn in roots:
        assert n_data > 0, chart_id
        assert n_svg > 0, chart_id
        assert n_drawn > 0, f"{chart_id}: no trace drawn"

    # tables with the expected rows
    counts = driver.execute_script(
        "var o={};['cases','problems','procurement','machines'].forEach(function(n){"
        "o[n]=document.querySelectorAll('#table-'+n+' tbody tr').length;});return o;")
    assert counts == {"cases": len(r.tables["cases"]), "problems": 4,
                      "procurement": len(r.tables["procurement"]), "machines": 3}
    findings = driver.execute_script("return document.querySelectorAll('#findings li').length")
    assert findings == len(r.findings) > 3
    estimated = driver.execute_script("return document.querySelectorAll('#table-cases tr.est').length")
    assert estimated == 2

    # sorting works: click the p50 header, the first row is the fastest
    driver.execute_script(
        "Array.from(document.querySelectorAll('#table-cases th')).find(function(t){"
        "return t.textContent.trim()==='p50 ms';}).click();")
    first = driver.execute_script(
        "var ths=Array.from(document.querySelectorAll('#table-cases th'));"
        "var i=ths.findIndex(function(t){return t.textContent.trim().indexOf('p50 ms')===0;});"
        "return document.querySelector('#table-cases tbody tr').cells[i].getAttribute('data-v');")
    assert float(first) == pytest.approx(r.tables["cases"]["p50_ms"].min())

    # no console errors (and the log channel works: a planted error is seen)
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == [], errors
    driver.execute_script("console.error('bench-log-probe')")
    assert any("bench-log-probe" in e.get("message", "") for e in driver.get_log("browser"))

    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 40, 12000))
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
