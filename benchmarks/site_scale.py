"""How long `atlas site` takes for a large run, and how big the site is: a synthetic index of 1000
classes x 2 methods.

    uv run python benchmarks/site_scale.py --size 224 --browser  # 1000 x 2 noisy 224-px images, timed in Chromium
    uv run python benchmarks/site_scale.py                      # 1000 classes, 16-px flat images (quick)
    uv run python benchmarks/site_scale.py --classes 200 --keep /tmp/site-bench
    uv run python benchmarks/site_scale.py --site results/RUN/site   # a real run's site, in Chromium

`--browser` (and `--site`) open the site's grid from disk in headless Chromium (Debian's
`chromium` and `chromium-driver`, as the browser tests use) and time, in the page's own clock:
loading until every card is drawn, a search that narrows the grid, and a sort by D probability.

Builds the synthetic index (made-up scores, 4 exemplars per class as the default config keeps; not
timed): from 64 px on, images like real ones in size on disk (`tests.site_synthetic`, style
"noisy": a 1/f colour field under per-pixel colour noise; the exemplars smoother, like photos),
below that flat colours. Then times `atlas site` on it (wall and CPU seconds) and prints the size
of the index page, of its data file, of each folder of the site and of the whole site, against the
150 MB that a site of 1000 classes x 2 methods is to stay under, and the size of the run's PNGs it
links. A benchmark, not a test: the times depend on the machine's load.
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
from atlas.site.groups import imagenet_names  # noqa: E402
from tests.site_synthetic import synthetic_index  # noqa: E402


def _kib(path: Path) -> float:
    return path.stat().st_size / 1024


BUDGET_MB = 150  # the site of 1000 classes x 2 methods


def _mib(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 2**20


def bench(root: Path, classes: int, size: int, methods: tuple[str, ...], exemplars: int) -> None:
    t0 = time.perf_counter()
    names = imagenet_names()
    style = "noisy" if size >= 64 else "flat"
    index = synthetic_index(
        root / "run",
        n_classes=classes,
        methods=methods,
        pairs=((0, 1), (2, 3)),
        size=size,
        failed=[(methods[-1], "class-0002")],
        n_exemplars=exemplars,
        style=style,
        labels={c: names[c] for c in range(min(classes, 1000))},  # ImageNet's: its groups, a real search
    )
    print(
        f"synthetic index: {classes} classes x {len(methods)} methods ({', '.join(methods)}) + 2 pairs + 2 filters, "
        f"{size}-px {style} images, {exemplars} exemplars per class ({time.perf_counter() - t0:.1f} s to make, not timed)"
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
    for folder in ("images", "thumbs", "exemplars"):
        found = [p for p in (out / folder).rglob("*") if p.is_file()]
        print(
            f"{folder}/: {len(found)} files, {_mib(found):.1f} MiB ({_mib(found) * 1024 / max(len(found), 1):.1f} KiB each)"
        )
    pages = list(out.glob("*.html"))
    other = (
        total / 2**20 - _mib(pages) - sum(_mib(list((out / f).rglob("*"))) for f in ("images", "thumbs", "exemplars"))
    )
    print(f"pages: {len(pages)} files, {_mib(pages):.1f} MiB; everything else {other:.1f} MiB")
    print(
        f"whole site: {files} files, {total / 2**20:.1f} MiB = {total / 1e6:.1f} MB "
        f"(budget for 1000 classes x 2 methods: {BUDGET_MB} MB)"
    )
    pngs = list((root / "run" / "generate").rglob("*.png")) + list((root / "run" / "data").rglob("*.png"))
    print(
        f"the run's PNGs the site links (not in it; `atlas site --png` adds them): {len(pngs)} files, {_mib(pngs):.1f} MiB"
    )


def browse(site: Path) -> None:
    """Time the grid of `site` in headless Chromium: load, search, sort (the page's own clock)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--allow-file-access-from-files",
        "--window-size=1280,1000",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        driver.get((site / "index.html").resolve().as_uri())
        cards = driver.execute_script("return document.querySelectorAll('#grid .card').length")
        load = driver.execute_script(
            "var t = performance.getEntriesByType('navigation')[0]; return [t.domContentLoadedEventEnd, t.loadEventEnd]"
        )
        rows = driver.execute_script("return window.ATLAS_INDEX.rows.length")
        time.sleep(1)  # let the thumbnails in view arrive
        decoded = driver.execute_script(
            "return [Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length, "
            "document.images.length]"
        )
        # The script's work and the layout it causes (offsetHeight forces it), in the page's clock.
        timed = """
            var el = document.getElementById(arguments[0]), t0 = performance.now();
            el.value = arguments[1];
            el.dispatchEvent(new Event(arguments[2]));
            document.body.offsetHeight;
            return [performance.now() - t0, document.querySelectorAll('#grid .card').length];
        """
        search = driver.execute_script(timed, "q", "harmonica", "input")
        clear = driver.execute_script(timed, "q", "", "input")
        sort = driver.execute_script(timed, "sort", "0", "change")
        unsort = driver.execute_script(timed, "sort", "", "change")
        dogs = driver.execute_script("return (window.ATLAS_INDEX.groups || []).indexOf('dogs')")
        group = driver.execute_script(timed, "group", str(dogs), "change") if dogs >= 0 else None
    finally:
        driver.quit()
    print(
        f"grid: {rows} images in the data, {cards} cards drawn; DOMContentLoaded {load[0]:.0f} ms, load {load[1]:.0f} ms"
    )
    print(f"search 'harmonica': {search[0]:.0f} ms ({search[1]} cards); clear: {clear[0]:.0f} ms ({clear[1]} cards)")
    print(f"thumbnails decoded 1 s after load: {decoded[0]} of {decoded[1]} (lazy: only those near the view)")
    print(f"sort by D probability: {sort[0]:.0f} ms ({sort[1]} cards); back to target order: {unsort[0]:.0f} ms")
    if group is not None:
        print(f"group 'dogs': {group[0]:.0f} ms ({group[1]} cards)")


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--size", type=int, default=16, help="side of the synthetic images in pixels (noisy from 64)")
    ap.add_argument("--methods", default="scratch,pretrained", help="comma-separated method names")
    ap.add_argument("--exemplars", type=int, default=4, help="exemplars per class")
    ap.add_argument("--keep", metavar="DIR", help="build in DIR and keep it (default: a temporary folder)")
    ap.add_argument("--browser", action="store_true", help="also time the grid in headless Chromium")
    ap.add_argument("--site", metavar="DIR", help="time this built site in Chromium instead (no synthetic index)")
    args = ap.parse_args()
    methods = tuple(m for m in args.methods.split(",") if m)
    if args.site:
        browse(Path(args.site))
    elif args.keep:
        bench(Path(args.keep), args.classes, args.size, methods, args.exemplars)
        if args.browser:
            browse(Path(args.keep) / "run" / "site")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            bench(Path(tmp), args.classes, args.size, methods, args.exemplars)
            if args.browser:
                browse(Path(tmp) / "run" / "site")


if __name__ == "__main__":
    cli()
