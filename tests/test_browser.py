"""
The demo plan's self-contained map.html, drawn over its offline base layer (the network's main
streets and the railway), in a real browser: Debian's headless Chromium driven by Selenium
through /usr/bin/chromedriver (no driver or browser download), with every host name
unresolvable, so the map must render from the file alone; base tiles fail, as offline.

`make test` installs chromium and chromium-driver; without them the tests skip, unless
COVPLAN_REQUIRE_BROWSER is set (CI sets it), where they fail.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from covplan.output.maps import plan_map, save_map
from test_maps import demo_base, demo_plan

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# The README's screenshot; refreshed by `COVPLAN_SCREENSHOT=docs/map.png make test`.
SCREENSHOT_COPY = os.environ.get("COVPLAN_SCREENSHOT")
WINDOW = (1280, 800)
TILE_HOST = "tile.openstreetmap.org"
# The flags this machine's closed network needs, plus: no host name resolves at all.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--window-size={WINDOW[0]},{WINDOW[1]}",
         "--host-resolver-rules=MAP * ~NOTFOUND"]


def _require_browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (the `test` extra)")
    if missing:
        reason = f"browser test needs {', '.join(missing)}; `make setup-test` installs them"
        if os.environ.get("COVPLAN_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)


@dataclass
class Page:
    driver: object
    plan: object
    errors: list[dict]            # console messages at SEVERE level, failed tiles excluded
    tile_failures: int
    screenshot: Path

    def count(self, selector: str) -> int:
        return self.driver.execute_script(f"return document.querySelectorAll({selector!r}).length")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    plan = demo_plan()
    folder = tmp_path_factory.mktemp("browser")
    html = save_map(plan_map(plan, base=demo_base()), folder / "map.html")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={folder / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        # --window-size counts the window's frame; the screenshot is of the page itself.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
        driver.get(html.as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return document.readyState === 'complete'"
            " && document.querySelectorAll('path.cov-community').length > 0"
            " && document.querySelectorAll('.cov-label').length > 0"))
        time.sleep(1.0)                  # let failed tile requests reach the log
        screenshot = folder / "map.png"
        driver.save_screenshot(str(screenshot))
        if SCREENSHOT_COPY:
            shutil.copyfile(screenshot, SCREENSHOT_COPY)
        log = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        tiles = [e for e in log if TILE_HOST in e["message"]]
        yield Page(driver, plan, [e for e in log if TILE_HOST not in e["message"]], len(tiles),
                   screenshot)
    finally:
        driver.quit()
        shutil.rmtree(folder / "profile", ignore_errors=True)


def test_leaflet_draws_every_community_center_and_old_boundary(page):
    plan = page.plan
    assert page.driver.execute_script("return L.version") == "1.9.3"
    assert page.count("path.cov-community") == len(plan.communities)
    assert page.count("path.cov-center") == len(plan.centers)
    assert page.count("path.cov-previous") == len(plan.previous)
    # Hidden at first: walk areas and density are one tick away in the layer control.
    assert page.count("path.cov-isochrone") == 0 and page.count("path.cov-density") == 0
    text = page.driver.execute_script("return document.body.innerText")
    assert f"Community plan: {len(plan.previous)} → {len(plan.communities)} communities" in text
    assert "Residents per community (target 10,000 ± 20%)" in text
    assert "© OpenStreetMap contributors" in text


def test_offline_base_labels_north_arrow_and_scale(page):
    plan = page.plan
    # One permanent label per community, giving its id and residents.
    labels = page.driver.execute_script(
        "return Array.from(document.querySelectorAll('.cov-label'), e => e.innerText)")
    assert len(labels) == len(plan.communities)
    expected = {f"{cid}\n{pop:,}" for cid, pop in zip(plan.communities["community_id"],
                                                       plan.communities["population"])}
    assert {text.strip() for text in labels} == expected
    # The base layer's streets are drawn from the file itself: merged lines, many pieces.
    d = page.driver.execute_script(
        "return Array.from(document.querySelectorAll('path.cov-base-street'),"
        " p => p.getAttribute('d')).join(' ')")
    assert d.count("M") >= 20
    assert page.count("path.cov-base-rail") == 1
    assert "Lanxin Railway" in page.driver.execute_script("return document.body.innerText")
    assert page.count(".cov-north-arrow") == 1
    assert page.count(".leaflet-control-scale-line") >= 1
    # The layer control starts collapsed, leaving the city in view.
    assert page.count(".leaflet-control-layers-expanded") == 0


def test_no_javascript_errors(page):
    assert page.errors == []
    assert page.tile_failures > 0          # the tiles really were asked for and failed offline


def _checkbox(driver, label: str):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    # The control starts collapsed: hover it open, as a planner does. Leaflet ignores clicks
    # in the first moment after the hover (a touch guard), so wait that out.
    control = driver.find_element(By.CSS_SELECTOR, ".leaflet-control-layers")
    ActionChains(driver).move_to_element(control).perform()
    time.sleep(0.2)
    assert "leaflet-control-layers-expanded" in control.get_attribute("class")
    for element in driver.find_elements(By.CSS_SELECTOR, ".leaflet-control-layers-overlays label"):
        if element.text.strip() == label:
            return element.find_element(By.TAG_NAME, "input")
    raise AssertionError(f"no layer named {label!r} in the layer control")


def test_layer_control_toggles_layers(page):
    driver, n = page.driver, len(page.plan.communities)
    legend = "Residents per community"
    box = _checkbox(driver, "communities")
    assert box.is_selected()
    box.click()
    assert page.count("path.cov-community") == 0
    assert legend not in driver.execute_script("return document.body.innerText")   # legend follows
    box.click()
    assert page.count("path.cov-community") == n
    assert legend in driver.execute_script("return document.body.innerText")
    walk = _checkbox(driver, "15-minute walk")
    walk.click()
    assert page.count("path.cov-isochrone") == len(page.plan.isochrones)
    walk.click()
    assert page.count("path.cov-isochrone") == 0


def test_center_popup_gives_its_community_figures(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = page.driver
    center = driver.find_elements(By.CSS_SELECTOR, "path.cov-center")[0]
    ActionChains(driver).move_to_element(center).click().perform()
    popup = driver.execute_script(
        "var p = document.querySelector('.leaflet-popup-content'); return p && p.innerText")
    assert popup, "clicking a center opened no popup"
    figures = page.plan.communities.set_index("center_id")
    center_id = popup.split("\n")[0].split("\t")[-1].strip()
    row = figures.loc[center_id]
    assert f"{int(row['population']):,}" in popup
    assert "replaces old communities" in popup and row["previous_ids"].split(" ")[0] in popup
    driver.execute_script("document.querySelector('.leaflet-popup-close-button').click()")


def test_screenshot_saved(page):
    data = page.screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == WINDOW
