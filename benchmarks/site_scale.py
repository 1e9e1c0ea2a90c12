"""How long `atlas site` takes for a large run: a synthetic index of 1000 classes x 3 methods.

    uv run python benchmarks/site_scale.py                      # 1000 classes, 16-px images
    uv run python benchmarks/site_scale.py --classes 200 --keep /tmp/site-bench
    uv run python benchmarks/site_scale.py --browser            # also time the grid in Chromium
    uv run python benchmarks/site_scale.py --site results/RUN/site   # a real run's site, in Chromium

`--browser` (and `--site`) open the site's grid from disk in headless Chromium (Debian's
`chromium` and `chromium-driver`, as the browser tests use) and time, in the page's own clock:
loading until every card is drawn, a search that narrows the grid, and a sort by D probability.

Builds the synthetic index (tiny PNGs, made-up scores, 2 exemplars per class; not timed), then
times `atlas site` on it (wall and CPU seconds) and prints the size of the index page, of its data
file, and of the whole site. A benchmark, not a test: the figures depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.site_synthetic

from atlas.cli import main  # noqa: E402
from tests.site_synthetic import synthetic_index  # noqa: E402


def _kib(path: Path) -> float:
    return path.stat().st_size / 1024


def bench(root: Path, classes: int, size: int) -> None:
    t0 = time.perf_counter()
    index = synthetic_index(
        root / "run", n_classes=classes, pairs=((0, 1), (2, 3)), size=size, failed=[("pixel", "class-0002")]
    )
    print(
        f"synthetic index: {classes} classes x 3 methods + 2 pairs + 2 filters, {size}-px images "
        f"({time.perf_counter() - t0:.1f} s to make, not timed)"
    )
    out = root / "run" / "site"
    c0, w0 = os.times(), time.perf_counter()
    assert main(["site", "--index", str(index), "--out", str(out)]) == 0
    c1, w1 = os.times(), time.perf_counter()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    files = sum(1 for p in out.rglob("*") if p.is_file())
    print(f"atlas site: {w1 - w0:.1f} s wall, {cpu:.1f} s CPU (user+sys)")
    print(f"index.html: {_kib(out / 'index.html'):.1f} KiB; data/index.js: {_kib(out / 'data' / 'index.js'):.1f} KiB")
    print(f"whole site: {files} files, {total / 2**20:.1f} MiB (images hard-linked from the run)")


def browse(site: Path) -> None:
    """Time the grid of `site` in headless Chromium: load, search, sort (the page's own clock)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        driver.get((site / "index.html").resolve().as_uri())
        cards = driver.execute_script("return document.querySelectorAll('#grid .card').length")
        load = driver.execute_script(
            "var t = performance.getEntriesByType('navigation')[0]; return [t.domContentLoadedEventEnd, t.loadEventEnd]"
        )
        rows = driver.execute_script("return window.ATLAS_INDEX.rows.length")
        timed = """
            var el = document.getElementById(arguments[0]), t0 = performance.now();
            el.value = arguments[1];
            el.dispatchEvent(new Event(arguments[2]));
            return [performance.now() - t0, document.querySelectorAll('#grid .card').length];
        """
        search = driver.execute_script(timed, "q", "harmonica", "input")
        clear = driver.execute_script(timed, "q", "", "input")
        sort = driver.execute_script(timed, "sort", "0", "change")
    finally:
        driver.quit()
    print(
        f"grid: {rows} images in the data, {cards} cards drawn; DOMContentLoaded {load[0]:.0f} ms, load {load[1]:.0f} ms"
    )
    print(f"search 'harmonica': {search[0]:.0f} ms ({search[1]} cards); clear: {clear[0]:.0f} ms ({clear[1]} cards)")
    print(f"sort by D probability: {sort[0]:.0f} ms ({sort[1]} cards)")


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--size", type=int, default=16, help="side of the synthetic images in pixels")
    ap.add_argument("--keep", metavar="DIR", help="build in DIR and keep it (default: a temporary folder)")
    ap.add_argument("--browser", action="store_true", help="also time the grid in headless Chromium")
    ap.add_argument("--site", metavar="DIR", help="time this built site in Chromium instead (no synthetic index)")
    args = ap.parse_args()
    if args.site:
        browse(Path(args.site))
    elif args.keep:
        bench(Path(args.keep), args.classes, args.size)
        if args.browser:
            browse(Path(args.keep) / "run" / "site")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            bench(Path(tmp), args.classes, args.size)
            if args.browser:
                browse(Path(tmp) / "run" / "site")


if __name__ == "__main__":
    cli()
