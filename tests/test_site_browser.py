"""The built site in a real browser: Debian's headless Chromium, driven by Selenium, kept off the
network, opens every page from file:// (under a sub-path with spaces) and finds no failed request,
no console error and every image decoded; the grid's search narrows it; a click reaches a class.

Needs the Debian packages `chromium` and `chromium-driver`. When either program is missing, the
browser fixture installs both with apt-get (`apt-get install -y --no-install-recommends chromium
chromium-driver`, after `apt-get update` when that first try fails), as tests/harness/slurm/install.sh
installs SLURM; with both present it does nothing. Where it cannot install them (not root, no
apt-get, the install failed) the tests fail, not skip, with one line saying why.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from atlas.cli import main
from atlas.formatting import number, percent
from tests.site_synthetic import synthetic_index

EVIL = "<script>alert(1)</script> & \"dq\" 'sq' a/b"
FAILED_REASON = "the loss went NaN at step 7"
# Scores at the edges of the number formats: the grid's script must print them as the pages do.
EDGES = {
    ("scratch", "class-0000"): {"d_prob": 1e-9, "judge_prob": 0.99999, "robust_prob": 0.5},
    ("pretrained", "class-0000"): {"d_prob": 0.99999, "judge_prob": 1.0, "robust_prob": 0.9731},
    ("pixel", "class-0000"): {"d_prob": 0.0008013, "judge_prob": 0.0, "robust_prob": 0.000_01},
    ("scratch", "filter-features.3-0000"): {"d_activation": 12345.6},
    ("pretrained", "filter-features.3-0000"): {"d_activation": 0.00042},
}

# Off the network: every host resolves to nothing and every request would go to a dead proxy;
# no background traffic of the browser's own (updates, sync, metrics).
OFFLINE_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--window-size=1280,1000",
)


PACKAGES = ("chromium", "chromium-driver")
INSTALL = f"apt-get install -y --no-install-recommends {' '.join(PACKAGES)}"
APT_LOG = Path(tempfile.gettempdir()) / "atlas-chromium-apt.log"
APT_TIMEOUT_S = 900


def _programs() -> tuple[str | None, str | None]:
    """The paths of Chromium and chromedriver, None for one that is not on PATH."""
    return shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


def _apt(log: Path, *args: str) -> int:
    """apt-get `args`, its output appended to `log`; waits for another apt run to let go of its lock."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("a") as out:
        out.write(f"$ apt-get {' '.join(args)}\n")
        out.flush()
        try:
            return subprocess.run(
                ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=APT_TIMEOUT_S,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            out.write(f"timed out after {APT_TIMEOUT_S} s\n")
            return 124


def _install() -> None:
    """Install Chromium and its driver from Debian, or fail the tests with one line saying why not."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.fail(
            f"Chromium or chromedriver is missing and installing them needs root: run `{INSTALL}` as root",
            pytrace=False,
        )
    if shutil.which("apt-get") is None:
        pytest.fail(
            "Chromium or chromedriver is missing and there is no apt-get to install them: "
            "install Chromium and its matching chromedriver on PATH",
            pytrace=False,
        )
    APT_LOG.write_text("")
    install = ("install", "-y", "-q", "--no-install-recommends", *PACKAGES)
    if _apt(APT_LOG, *install) != 0:  # the package lists may be missing (a fresh machine) or stale
        _apt(APT_LOG, "update", "-q")
        if _apt(APT_LOG, *install) != 0:
            last = [line for line in APT_LOG.read_text(errors="replace").splitlines() if line.strip()][-1:]
            pytest.fail(
                f"`{INSTALL}` failed ({last[0].strip() if last else 'no output'}); full log: {APT_LOG}", pytrace=False
            )


def _browser_programs() -> tuple[str, str]:
    """Chromium and chromedriver, installed first when either is missing."""
    chromium, driver = _programs()
    if chromium is None or driver is None:
        _install()
        chromium, driver = _programs()
        if chromium is None or driver is None:
            pytest.fail(
                f"`{INSTALL}` succeeded but {'chromium' if chromium is None else 'chromedriver'} is still not on PATH",
                pytrace=False,
            )
    return chromium, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    chromium, chromedriver = _browser_programs()
    opts = Options()
    opts.binary_location = chromium
    for flag in OFFLINE_FLAGS:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser") / "a sub path" / "run"
    index = synthetic_index(root, labels={1: EVIL}, failed=[("pixel", "class-0002")], overrides=EDGES)
    assert main(["site", "--index", str(index), "--out", str(root / "site")]) == 0
    # A page with a missing image and a script error: the checks below must catch both.
    (root / "site" / "broken-control.html").write_text(
        '<!doctype html><link rel="icon" href="data:,"><img src="images/missing.png" alt="x">'
        "<script>undefinedFunction()</script>"
    )
    return root / "site"


def _drain(driver: webdriver.Chrome) -> list[str]:
    """Problems since the last call: console errors, failed requests, requests off file:/data:."""
    problems = [f"console: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        params = msg.get("params", {})
        if msg["method"] == "Network.loadingFailed":
            problems.append(f"failed request: {params.get('errorText')} ({params.get('type')})")
        elif msg["method"] == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:")):
                problems.append(f"request off the site: {url}")
    return problems


def _undecoded(driver: webdriver.Chrome) -> list[str]:
    """Scroll every image into view (lazy ones load then), wait, return those not decoded."""
    n = driver.execute_script("return document.images.length")
    for i in range(n):
        driver.execute_script("document.images[arguments[0]].scrollIntoView()", i)
        with contextlib.suppress(Exception):  # reported below as undecoded
            WebDriverWait(driver, 10).until(
                lambda d, i=i: d.execute_script("return document.images[arguments[0]].complete", i)
            )
    return driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
    )


def _visit(driver: webdriver.Chrome, url: str) -> tuple[list[str], list[str], int]:
    _drain(driver)
    driver.get(url)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")
    bad = _undecoded(driver)
    time.sleep(0.2)  # let late log entries arrive
    return _drain(driver), bad, driver.execute_script("return document.images.length")


def test_the_checks_catch_a_broken_page(browser: webdriver.Chrome, site: Path) -> None:
    problems, undecoded, _ = _visit(browser, (site / "broken-control.html").as_uri())
    assert any("failed request" in p for p in problems), problems
    assert any("undefinedFunction" in p for p in problems), problems
    assert undecoded and undecoded[0].endswith("missing.png")


def test_every_page_loads_cleanly_from_disk(browser: webdriver.Chrome, site: Path) -> None:
    pages = sorted(p for p in site.glob("*.html") if p.name != "broken-control.html")
    assert len(pages) == 17
    images = 0
    for page in pages:
        problems, undecoded, n = _visit(browser, page.as_uri())
        assert not problems, (page.name, problems)
        assert not undecoded, (page.name, undecoded)
        images += n
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert  # noqa: B018 - the class name's <script> must not have run
    # The grid's 20 thumbnails; the target pages' 28 images (4 classes x 3 methods - 1 failed + 4 x 2
    # exemplars, 3 for the pair, 2 filters x 3); the pairs (3) and layer (6) pages' thumbnails; the
    # class images of the failures page and of the one group's page (11 each).
    assert images == 20 + 28 + 3 + 6 + 11 + 11


def test_grid_search_narrows_and_a_click_reaches_the_class(
    browser: webdriver.Chrome, site: Path, tmp_path: Path
) -> None:
    _visit(browser, (site / "index.html").as_uri())
    cards = browser.find_elements(By.CSS_SELECTOR, "#grid .card")
    assert len(cards) == 21
    failed = browser.find_elements(By.CSS_SELECTOR, "#grid .card .failed")
    assert len(failed) == 1 and FAILED_REASON in failed[0].text
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "site-grid.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")

    # Each card prints its scores one to a line as the pages do (atlas.formatting): "D 97.3 %",
    # "judge 0.0801 %", "robust 50 %", or "activation 12.3" for a filter.
    text = (site / "data" / "index.js").read_text(encoding="ascii")
    data = json.loads(text[len("window.ATLAS_INDEX=") : -2])

    def shown(row: list) -> list[str]:
        scores = row[8:]
        if scores[0] is None and row[7] is None:
            return [f"activation {number(scores[4])}"]
        return [
            " ".join(f"{name} {percent(p)}".split()) for name, p in zip(("D", "judge", "robust"), scores, strict=False)
        ]

    def lines() -> list[list[str]]:  # the browser's text has plain spaces for no-break ones
        return [
            [" ".join(line.split()) for line in c.find_element(By.CSS_SELECTOR, ".scores").text.splitlines()]
            for c in browser.find_elements(By.CSS_SELECTOR, "#grid .card")
        ]

    assert lines() == [shown(r) for r in data["rows"]]
    for edge in (
        ["D < 0.001 %", "judge > 99.9 %", "robust 50 %"],
        ["D > 99.9 %", "judge 100 %", "robust 97.3 %"],
        ["D 0.0801 %", "judge 0 %", "robust 0.001 %"],
        ["activation 12346"],
        ["activation 4.2e-4"],
    ):
        assert edge in lines(), edge

    # Sorting by D probability, high first: the grid's values in order, images without one last.
    Select(browser.find_element(By.ID, "sort")).select_by_visible_text("D probability")
    with_d = sorted((r for r in data["rows"] if r[8] is not None), key=lambda r: -r[8])
    assert lines()[:14] == [shown(r) for r in with_d] and len(with_d) == 14
    assert all(card[0] in ("D \u2013",) or card[0].startswith("activation") for card in lines()[14:])
    Select(browser.find_element(By.ID, "sort")).select_by_visible_text("target order")

    search = browser.find_element(By.ID, "q")
    search.send_keys("alert(1)")
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#grid .card .name")]
    assert names and len(names) < 21
    assert set(names) == {EVIL, f"class 0 + {EVIL}"}  # the class and its pair, by name, as text
    search.clear()
    search.send_keys("3")  # by class index
    ids = {e.get_attribute("href").rsplit("/", 1)[-1] for e in browser.find_elements(By.CSS_SELECTOR, "#grid .card")}
    assert ids == {"class-0003.html#m-scratch", "class-0003.html#m-pretrained", "class-0003.html#m-pixel"}
    search.clear()
    search.send_keys("1")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#grid .card")) == 9  # class 1, pair 0+1, channel 1
    Select(browser.find_element(By.ID, "method")).select_by_visible_text("scratch")
    cards = browser.find_elements(By.CSS_SELECTOR, "#grid .card")
    assert [c.get_attribute("href").rsplit("/", 1)[-1] for c in cards] == [
        "class-0001.html#m-scratch",
        "pair-0000+0001.html#m-scratch",
        "filter-features.3-0001.html#m-scratch",
    ]
    Select(browser.find_element(By.ID, "kind")).select_by_visible_text("class")
    cards = browser.find_elements(By.CSS_SELECTOR, "#grid .card")
    assert len(cards) == 1
    cards[0].click()
    WebDriverWait(browser, 10).until(lambda d: d.current_url.split("#")[0].endswith("/class-0001.html"))
    assert browser.find_element(By.TAG_NAME, "h1").text == EVIL
    problems, undecoded, _ = _visit(browser, browser.current_url)
    assert not problems and not undecoded


def test_a_group_in_the_address_narrows_the_grid(browser: webdriver.Chrome, site: Path) -> None:
    text = (site / "data" / "index.js").read_text(encoding="ascii")
    data = json.loads(text[len("window.ATLAS_INDEX=") : -2])
    assert len(data["group_slugs"]) == 1  # the synthetic labels are not ImageNet's: one letter group
    _visit(browser, (site / "index.html").as_uri() + "#group=" + data["group_slugs"][0])
    # The group's classes (4 x 3 methods) and the pair of two of them (3); no filter.
    cards = browser.find_elements(By.CSS_SELECTOR, "#grid .card")
    assert len(cards) == 15
    assert not any("filter-" in c.get_attribute("href") for c in cards)
    Select(browser.find_element(By.ID, "group")).select_by_visible_text("all")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#grid .card")) == 21
    assert "#group=" not in browser.current_url
    problems, undecoded, _ = _visit(browser, (site / "failures.html").as_uri())
    assert not problems and not undecoded


@pytest.fixture(scope="module")
def compare_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run A's site beside a second model's run B (`atlas compare` on random-weight models)."""
    root = tmp_path_factory.mktemp("browser") / "two models"
    methods = ("pixel", "fourier")
    a = synthetic_index(root / "a", methods=methods)
    b = synthetic_index(root / "b", methods=methods, style="noisy")
    table = root / "a" / "compare" / "compare.parquet"
    models = ["--weights", "random", "--image-size", "32", "--other-classifier", "efficientnet-lite2"]
    models += ["--other-weights", "random", "--other-image-size", "32"]
    assert main(["compare", "--index", str(a), "--other-index", str(b), *models, "--out", str(table)]) == 0
    assert main(["site", "--index", str(a), "--compare", str(table), "--out", str(root / "a" / "site")]) == 0
    return root / "a" / "site"


def test_a_class_page_shows_both_models_images_side_by_side(browser: webdriver.Chrome, compare_site: Path) -> None:
    for name in ("class-0001.html", "pair-0000+0001.html", "changed.html", "summary.html"):
        problems, undecoded, _ = _visit(browser, (compare_site / name).as_uri())
        assert not problems, (name, problems)
        assert not undecoded, (name, undecoded)
    browser.get((compare_site / "class-0001.html").as_uri())
    for method in ("pixel", "fourier"):
        images = browser.find_elements(By.CSS_SELECTOR, f"#two-{method} + .two-models img")
        assert len(images) == 2, method
        a, b = images
        assert f"/images/{method}/class-0001.jpg" in a.get_attribute("src")
        assert f"/compare/images/{method}/class-0001.jpg" in b.get_attribute("src")
        for img in images:
            assert browser.execute_script("return arguments[0].naturalWidth", img) > 0
        # Side by side: B's image to the right of A's, on the same line.
        assert a.location["y"] == b.location["y"] and b.location["x"] > a.location["x"] + a.size["width"]
    # The most-changed page lists every compared target, each linking to its page.
    browser.get((compare_site / "changed.html").as_uri())
    links = {
        e.get_attribute("href").rsplit("/", 1)[-1]
        for e in browser.find_elements(By.CSS_SELECTOR, "table.changed td:nth-child(2) a")
    }
    assert links == {"class-0000.html", "class-0001.html", "class-0002.html", "class-0003.html", "pair-0000+0001.html"}
