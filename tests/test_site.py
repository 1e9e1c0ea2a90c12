"""`atlas site`: the static site of a synthetic index, inspected file by file (no browser here:
tests/test_site_browser.py opens it in Chromium)."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd
import pyarrow.parquet as pq
import pytest

from atlas.cli import main
from atlas.formatting import number, percent
from atlas.site import MARKER, comparison, load_index, method_descriptions, method_order, slug, target_views
from tests.site_synthetic import synthetic_index

EVIL = "<script>alert(1)</script> & \"dq\" 'sq' a/b"
LABELS = {1: EVIL, 2: "tench & <b>bold</b>"}
FAILED = [("pixel", "class-0002")]
SAFE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")
SCRIPTS = {"data/index.js", "assets/atlas.js"}


def _judged(d_prob: float, rank: int, top1: int, judge_prob: float, seconds: float) -> dict[str, object]:
    """A class target's scores: D's probability, the judge's rank of the class, its top-1 class, ..."""
    return {
        "d_prob": d_prob,
        "judge_rank": rank,
        "judge_top5": [top1, 990, 991, 992, 993],
        "judge_prob": judge_prob,
        "seconds": seconds,
    }


# The class targets' scores, chosen so that the comparison table's cells are known by construction.
JUDGED = {
    # scratch: D > 0.5 three times (0.9, 0.7, 0.51), judge top-1 twice, top-5 three times, top-1
    # classes {0, 7, 2}, mean judge prob (0.8 + 0.1 + 0.6 + 0.02) / 4 = 38 %, mean seconds 3.
    ("scratch", "class-0000"): _judged(0.9, 1, 0, 0.8, 2.0),
    ("scratch", "class-0001"): _judged(0.7, 3, 7, 0.1, 4.0),
    ("scratch", "class-0002"): _judged(0.4, 1, 2, 0.6, 3.0),
    ("scratch", "class-0003"): _judged(0.51, 40, 7, 0.02, 3.0),
    # pretrained: 0.5 is not above one half; rank 5 is in the top 5, rank 6 is not; top-1 classes
    # {9, 3}; mean judge prob 1.26 / 4 = 31.5 %, mean seconds 11.5.
    ("pretrained", "class-0000"): _judged(0.5, 5, 9, 0.05, 10.0),
    ("pretrained", "class-0001"): _judged(0.99, 2, 9, 0.3, 11.0),
    ("pretrained", "class-0002"): _judged(0.6, 6, 9, 0.01, 12.0),
    ("pretrained", "class-0003"): _judged(0.2, 1, 3, 0.9, 13.0),
    # pixel: fools D, never the judge, which sees class 111 in every image; class-0002 failed (a
    # miss, no judge prob); mean judge prob 2e-6 (< 0.001 %), mean seconds 2 / 4 = 0.5.
    ("pixel", "class-0000"): _judged(0.999, 300, 111, 1e-6, 0.25),
    ("pixel", "class-0001"): _judged(0.98, 1000, 111, 2e-6, 0.5),
    ("pixel", "class-0002"): {"seconds": 0.75},
    ("pixel", "class-0003"): _judged(0.97, 7, 111, 3e-6, 0.5),
}


class _Page(HTMLParser):
    """Links, ids, script tags and the text of one page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self.scripts: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.failed = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in ("href", "src"):
            if a.get(name) is not None:
                self.links.append((tag, a[name]))  # type: ignore[arg-type]
        if a.get("id"):
            self.ids.add(a["id"])  # type: ignore[arg-type]
        if tag == "script":
            self.scripts.append(a)
        if tag == "img":
            self.imgs.append(a)
        if "failed" in (a.get("class") or "").split():
            self.failed += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


class _Tables(HTMLParser):
    """Every table of a page, in order: its class and its rows' cell texts (whitespace collapsed)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append((dict(attrs).get("class") or "", []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None and self.tables:
            self.tables[-1][1][-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def tables(path: Path) -> list[tuple[str, list[list[str]]]]:
    parser = _Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tables


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def build(tmp_path: Path, **kw: object) -> Path:
    index = synthetic_index(tmp_path / "run", labels=LABELS, failed=FAILED, **kw)  # type: ignore[arg-type]
    assert main(["site", "--index", str(index), "--out", str(tmp_path / "run" / "site")]) == 0
    return tmp_path / "run" / "site"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("site"), overrides=JUDGED)


def grid_data(site: Path) -> dict:
    text = (site / "data" / "index.js").read_text(encoding="ascii")
    assert text.startswith("window.ATLAS_INDEX=") and text.endswith(";\n")
    return json.loads(text[len("window.ATLAS_INDEX=") : -2])


def test_the_site_has_every_page_and_file(site: Path) -> None:
    names = {p.name for p in site.iterdir()}
    for name in (
        "index.html",
        "summary.html",
        "pairs.html",
        "layers.html",
        "provenance.html",
        "downloads.html",
        "index.parquet",
        "index.csv",
        "class-0000.html",
        "class-0003.html",
        "pair-0000+0001.html",
        "filter-features.3-0000.html",
        "layer-features.3.html",
        "failures.html",
        "groups.html",
        MARKER,
    ):
        assert name in names, name
    # Every image but the failed one, at full size and as a thumbnail, as JPEG; the exemplars; no
    # PNG in the site (they are linked in the run folder).
    assert len(list((site / "images").rglob("*.jpg"))) == 3 * 7 - 1
    assert len(list((site / "thumbs").rglob("*.jpg"))) == 3 * 7 - 1
    assert len(list((site / "exemplars").glob("*.jpg"))) == 4 * 2
    assert not (site / "images" / "pixel" / "class-0002.jpg").exists()
    assert not list(site.rglob("*.png")) and not (site / "png").exists()
    # The downloads are the index itself and a CSV of the same rows.
    table = pq.read_table(site / "index.parquet")
    csv = pd.read_csv(site / "index.csv")
    assert len(csv) == table.num_rows == 21
    assert EVIL in set(csv["label"])
    assert json.loads(csv["loss_curve"].iloc[0]) == table.column("loss_curve")[0].as_py()
    # The provenance page shows the metadata's entries, the downloads page links the files.
    prov = "".join(parse(site / "provenance.html").text)
    for text in ("config_sha256", "ef" * 32, "git_commit", "0" * 40, "judge-net", "decoder_sha256", "cd" * 32):
        assert text in prov, text
    links = [url for _, url in parse(site / "downloads.html").links]
    assert "index.parquet" in links and "index.csv" in links


def test_every_link_is_relative_and_resolves(site: Path) -> None:
    pages = {p: parse(p) for p in site.glob("*.html")}
    # The targets and index, summary, pairs, layers, layer, provenance, downloads, failures, groups
    # and the one group (the synthetic labels are not ImageNet's: one first-letter group).
    assert len(pages) == 7 + 7 + 3
    run = site.parent
    originals = {r for r in pd.read_parquet(site / "index.parquet").image.dropna()}
    originals |= {e for ex in pd.read_parquet(site / "index.parquet").exemplars for e in ex}
    checked = outside = 0
    for path, page in pages.items():
        for tag, url in page.links:
            if url.startswith("data:"):
                assert tag == "link" and url == "data:,", (path.name, url)  # the empty favicon
                continue
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc and not url.startswith("/"), (path.name, url)
            target = site / unquote(parts.path) if parts.path else path
            assert target.resolve().is_file(), (path.name, url)
            if not target.resolve().is_relative_to(site.resolve()):
                # Only the exact originals leave the site: links to the run's files the index names.
                assert tag == "a" and target.resolve().relative_to(run.resolve()).as_posix() in originals, (
                    path.name,
                    url,
                )
                outside += 1
                continue
            if parts.fragment.startswith("group="):  # the grid narrowed to a group, by its script
                assert target.name == "index.html", (path.name, url)
                assert parts.fragment[len("group=") :] in grid_data(site)["group_slugs"], (path.name, url)
            elif parts.fragment:
                assert parts.fragment in pages[target].ids, (path.name, url)
            checked += 1
    assert checked > 100 and outside == 20 + 8  # each image's PNG; each exemplar once (its page shows it once)
    for css in site.rglob("*.css"):
        assert "url(" not in css.read_text() and "@import" not in css.read_text()


def test_class_names_render_as_text_everywhere(site: Path) -> None:
    for path in site.rglob("*"):
        # No file name from a label: every component is a safe stem.
        for part in path.relative_to(site).parts:
            assert SAFE_NAME.match(part), path
    for path in [*site.rglob("*.html"), *site.rglob("*.js"), *site.rglob("*.css")]:
        text = path.read_text(encoding="utf-8")
        assert "<script>alert" not in text and "<b>bold" not in text, path.name
        if path.suffix == ".html":
            page = parse(path)
            # The only scripts are the site's own two files, only on the index page.
            assert all(s.get("src") in SCRIPTS for s in page.scripts), path.name
            assert len(page.scripts) == (2 if path.name == "index.html" else 0), path.name
    # The class's own page and the pair page show the name as text, with its markup escaped.
    page = parse(site / "class-0001.html")
    assert EVIL in "".join(page.text)
    assert (
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;dq&#34; &#39;sq&#39; a/b"
        in (site / "class-0001.html").read_text()
    )
    assert f"class 0 + {EVIL}" in "".join(parse(site / "pairs.html").text)
    # The grid's data file gives the name back exactly, from escapes only.
    labels = {row[0]: row[4] for row in grid_data(site)["rows"]}
    assert labels["class-0001"] == EVIL and labels["class-0002"] == LABELS[2]


def test_failed_targets_are_labelled_placeholders(site: Path) -> None:
    page = parse(site / "class-0002.html")
    assert page.failed == 1
    assert "the loss went NaN at step 7" in "".join(page.text)
    assert not any("pixel" in (img.get("src") or "") for img in page.imgs)
    assert len(page.imgs) == 2 + 2  # two methods and two exemplars
    rows = {(r[0], r[2]): r for r in grid_data(site)["rows"]}
    methods = grid_data(site)["methods"]
    assert rows["class-0002", methods.index("pixel")][7] == "the loss went NaN at step 7"
    assert rows["class-0002", methods.index("scratch")][7] is None


def test_grid_data_has_one_row_per_image_classes_first(site: Path) -> None:
    data = grid_data(site)
    assert data["methods"] == ["scratch", "pretrained", "pixel"]
    ids = [r[0] for r in data["rows"]]
    assert len(ids) == 21
    kinds = [data["kinds"][r[3]] for r in data["rows"]]
    assert kinds == sorted(kinds, key=["class", "pair", "filter"].index)
    assert ids[:3] == ["class-0000"] * 3


def test_target_pages_link_their_neighbours(site: Path) -> None:
    page = (site / "class-0001.html").read_text()
    assert 'rel="prev" href="class-0000.html"' in page and 'rel="next" href="class-0002.html"' in page
    assert 'rel="prev"' not in (site / "class-0000.html").read_text()
    assert "<polyline" in page  # the loss curves
    summary = (site / "summary.html").read_text()
    # The readability bars; the histograms: class and pair, 3 scores; filter, 2; x 3 methods.
    assert summary.count("<svg") == 1 + 3 * 3 + 3 * 3 + 3 * 2


def test_summary_means_are_the_index_means(site: Path) -> None:
    df = pd.read_parquet(site / "index.parquet")
    mean = df[(df.kind == "class") & (df.method == "scratch")]["judge_prob"].mean()
    assert f"<td>{percent(mean)}</td>" in (site / "summary.html").read_text()


def test_slug_is_file_name_safe_and_unique() -> None:
    for text in ("../../etc/passwd", "a/b", "<script>", ".hidden", "index", "layer-x", "groups-x", "failures", ""):
        s = slug(text)
        assert SAFE_NAME.match(s) and not s.startswith(".") and len(s) < 120, (text, s)
        assert s not in ("index", "layer-x", "groups-x", "failures")
    assert len(slug("x" * 300)) < 120
    assert slug("class-0009") == "class-0009" and slug("filter-features.9-0003") == "filter-features.9-0003"
    assert len({slug(t) for t in ("a/b", "a_b", "a?b", "a b")}) == 4


def test_a_hostile_layer_name_stays_inside_the_site(tmp_path: Path) -> None:
    site = build(tmp_path, filters={"../../up/x": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    for path in site.rglob("*"):
        assert all(SAFE_NAME.match(part) for part in path.relative_to(site).parts), path
    assert len(list(site.glob("layer-*.html"))) == 1 and len(list(site.glob("filter-*.html"))) == 1


def test_rebuilding_replaces_the_site(tmp_path: Path) -> None:
    site = build(tmp_path)
    (site / "stale.html").write_text("old")
    assert main(["site", "--index", str(tmp_path / "run" / "index.parquet"), "--out", str(site)]) == 0
    assert not (site / "stale.html").exists() and (site / "index.html").is_file()


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("atlas site: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = synthetic_index(tmp_path / "run", failed=FAILED)
    out = tmp_path / "out"
    assert "does not exist" in _error(capsys, ["site", "--index", str(tmp_path / "none.parquet"), "--out", str(out)])
    # An image the index lists but that is gone.
    gone = tmp_path / "run" / "generate" / "scratch" / "class" / "chunk-0000" / "class-0001.png"
    gone.rename(gone.with_suffix(".bak"))
    assert "missing" in _error(capsys, ["site", "--index", str(index), "--out", str(out)])
    gone.with_suffix(".bak").rename(gone)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    # A table that is not an index.
    pq.write_table(pq.read_table(index).drop_columns(["judge_prob"]), tmp_path / "bad.parquet")
    assert "lacks judge_prob" in _error(capsys, ["site", "--index", str(tmp_path / "bad.parquet"), "--out", str(out)])
    # Output folders it must not replace: the run folder, and a folder that is not a site.
    assert "holds the index" in _error(capsys, ["site", "--index", str(index), "--out", str(tmp_path / "run")])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert "not an atlas site" in _error(capsys, ["site", "--index", str(index), "--out", str(tmp_path / "mine")])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep" and index.is_file()
    assert "out of range" in _error(capsys, ["site", "--index", str(index), "--thumb-size", "2"])


def test_the_command_line_default_thumbnail_side_is_the_sites() -> None:
    # atlas.cli.site keeps its own copy so that `atlas site --help` does not import the renderer.
    import atlas.cli.site
    import atlas.site

    assert atlas.cli.site.THUMB_SIZE == atlas.site.THUMB_SIZE


def test_the_workflow_rule_renders_the_site_from_the_index(tmp_path: Path) -> None:
    from tests.test_workflow import RUN, ok, snakemake, write_config

    write_config(tmp_path)
    run = tmp_path / "results" / RUN
    synthetic_index(run, labels=LABELS, failed=FAILED)
    ok(snakemake(tmp_path, f"results/{RUN}/site"))
    assert (run / "site" / "index.html").is_file() and (run / "site" / "class-0001.html").is_file()
    assert "wrote the site of 7 targets" in (run / "logs" / "site.log").read_text()
    assert (run / "benchmarks" / "site.tsv").is_file()


NBSP = "\u00a0"


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (None, "–"),
        (float("nan"), "–"),
        (float("inf"), "–"),
        (0, "0 %"),
        (0.0, "0 %"),
        (1, "100 %"),
        (1.0, "100 %"),
        (1e-9, "< 0.001 %"),
        (0.000_01, "0.001 %"),
        (0.0008013, "0.0801 %"),
        (0.5, "50 %"),
        (0.9731, "97.3 %"),
        (0.999, "99.9 %"),
        (0.9995, "> 99.9 %"),
        (0.99999, "> 99.9 %"),
        (1.000_000_1, "100 %"),
    ],
)
def test_probabilities_print_as_percentages_never_rounded_to_0_or_100(p: object, text: str) -> None:
    assert percent(p) == text.replace(" ", NBSP)  # never wraps apart


@pytest.mark.parametrize(
    ("v", "text"),
    [
        (None, "–"),
        (float("nan"), "–"),
        (float("-inf"), "–"),
        (0, "0"),
        (0.0, "0"),
        (1, "1"),
        (1.0, "1"),
        (1e-9, "1e-9"),
        (0.5, "0.5"),
        (0.99999, "1"),
        (0.00042, "4.2e-4"),
        (0.0012345, "0.00123"),
        (12.345, "12.3"),
        (-3.14159, "-3.14"),
        (999.4, "999"),
        (999.7, "1000"),
        (12345.6, "12346"),
        (-12345.6, "-12346"),
        (2.5e7, "2.5e7"),
        (123456789, "123456789"),
        (True, "yes"),
        (False, "no"),  # integers (ranks, seeds) exact
    ],
)
def test_other_numbers_print_to_3_significant_digits(v: object, text: str) -> None:
    assert number(v) == text


def test_no_page_prints_a_long_float(site: Path) -> None:
    for path in site.glob("*.html"):
        if path.name != "provenance.html":  # the run's configuration, as recorded
            for decimal in re.findall(r"\d+\.\d+", " ".join(parse(path).text)):
                assert len(decimal.replace(".", "").lstrip("0")) <= 3, (path.name, decimal)
    page = "".join(parse(site / "class-0000.html").text)
    assert f"{NBSP}%" in page


def test_the_summary_leads_with_the_comparison_of_the_methods_on_the_classes(site: Path) -> None:
    # " ".join(text.split()) turns the no-break space before "%" into a plain one.
    found = tables(site / "summary.html")
    # first, then the naturalness beside photos, before the per-kind tables
    assert [cls for cls, _ in found][:3] == ["comparison", "naturalness", "summary"]
    head, *rows = found[0][1]
    assert head == [
        "method",
        "images",
        "D prob > 0.5",
        "judge top-1",
        "judge top-5",
        "mean judge prob",
        "distinct judge top-1 labels",
        "seconds per image",
    ]
    assert rows == [
        ["scratch", "4", "3/4 (75 %)", "2/4 (50 %)", "3/4 (75 %)", "38 %", "3", "3"],
        ["pretrained", "4", "2/4 (50 %)", "1/4 (25 %)", "3/4 (75 %)", "31.5 %", "2", "11.5"],
        ["pixel", "4 (1 failed)", "3/4 (75 %)", "0/4 (0 %)", "0/4 (0 %)", "< 0.001 %", "1", "0.5"],
    ]
    text = (site / "summary.html").read_text(encoding="utf-8")
    assert text.index('class="comparison"') < text.index("How to read it") < text.index('class="summary"')
    # The same counts from the function, straight from the index.
    table, _ = load_index(site / "index.parquet")
    targets = target_views(table.to_pylist(), site)
    by_method = {c.method: c for c in comparison(targets, ["scratch", "pretrained", "pixel"])}
    s, p, x = by_method["scratch"], by_method["pretrained"], by_method["pixel"]
    assert (s.n, s.failed, s.d_over_half, s.judge_top1, s.judge_top5, s.distinct_top1) == (4, 0, 3, 2, 3, 3)
    assert (p.n, p.failed, p.d_over_half, p.judge_top1, p.judge_top5, p.distinct_top1) == (4, 0, 2, 1, 3, 2)
    assert (x.n, x.failed, x.d_over_half, x.judge_top1, x.judge_top5, x.distinct_top1) == (4, 1, 3, 0, 0, 1)
    assert s.judge_prob_mean == pytest.approx(0.38) and p.judge_prob_mean == pytest.approx(0.315)
    assert x.judge_prob_mean == pytest.approx(2e-6) and x.seconds_mean == pytest.approx(0.5)
    assert s.seconds_mean == pytest.approx(3.0) and p.seconds_mean == pytest.approx(11.5)


def test_the_summary_sets_each_methods_naturalness_beside_the_dataset_photos(site: Path) -> None:
    found = dict(tables(site / "summary.html"))
    head, *rows = found["naturalness"]
    assert head == ["images of", "images", "saturation", "RMS contrast", "colourfulness"]
    assert [r[0] for r in rows] == ["scratch", "pretrained", "pixel", "the dataset's photos"]
    assert rows[-1] == ["the dataset's photos", "39", "0.29", "0.2", "38.5"]
    table, _ = load_index(site / "index.parquet")
    got = [r for r in table.to_pylist() if r["method"] == "pixel" and not r["failed"]]
    sat = sum(r["saturation"] for r in got) / len(got)
    assert rows[2][1] == str(len(got))  # the failed image has no figures
    assert rows[2][2] == f"{number(sat)} ({sat / 0.29:.2f}x)"


def test_a_class_page_says_whether_its_exemplars_are_photos_of_the_class(site: Path) -> None:
    def note(page: str) -> str:
        text = (site / page).read_text(encoding="utf-8")
        return html.unescape(" ".join(text.split('class="exemplar-note">', 1)[1].split("</p>", 1)[0].split()))

    assert note("class-0000.html").startswith("The 39 photos of the run's dataset (bundled)")
    assert note("class-0000.html").endswith("1 of them is labelled class 0.")
    assert "none of them is labelled class 3: these are the photos D scores highest for it" in note("class-0003.html")
    assert "exemplar-note" not in (site / "filter-features.3-0000.html").read_text(encoding="utf-8")  # it has none
    captions = (site / "class-0000.html").read_text(encoding="utf-8")
    assert "<figcaption>tench<br>" in captions and "<figcaption>unlabelled<br>" in captions


def test_a_class_page_shows_the_targets_seeds_together(tmp_path: Path) -> None:
    index = synthetic_index(tmp_path / "run", methods=("fourier", "maco"), pairs=(), filters={}, seeds=3)
    site = tmp_path / "site"
    assert main(["site", "--index", str(index), "--out", str(site)]) == 0
    pages = sorted(p.name for p in site.glob("class-*.html"))
    assert pages == [f"class-{c:04d}.html" for c in range(4)]  # one page per target, not per seed
    text = (site / "class-0002.html").read_text(encoding="utf-8")
    seeds = text.split("<h2>Seeds</h2>", 1)[1].split("<h2>", 1)[0]
    for m in ("fourier", "maco"):
        for k in (1, 2):
            assert f'src="thumbs/{m}/class-0002-seed{k}.jpg"' in seeds
            assert (site / "images" / m / f"class-0002-seed{k}.jpg").is_file()
        assert f'src="thumbs/{m}/class-0002.jpg"' in seeds
    assert "diversity 0.2" in seeds
    # The grid and the comparison count each target once (seed 0).
    assert [r[0] for r in grid_data(site)["rows"]] == [f"class-{c:04d}" for c in range(4) for _ in range(2)]
    head, *rows = dict(tables(site / "summary.html"))["comparison"]
    assert [r[1] for r in rows] == ["4", "4"]


def test_the_summary_describes_each_known_method_in_the_site_order(tmp_path: Path) -> None:
    names = ("maco", "pixel", "new-method", "scratch", "fourier", "pretrained")
    index = synthetic_index(tmp_path / "run", methods=names, pairs=(), filters={})
    assert main(["site", "--index", str(index), "--out", str(tmp_path / "site")]) == 0
    order = method_order(names)
    assert order[:3] == ["scratch", "pretrained", "pixel"] and order[-1] == "new-method"  # unknown names last
    found = tables(tmp_path / "site" / "summary.html")
    assert found[0][0] == "comparison"
    assert [row[0] for row in found[0][1][1:]] == order
    page = _Notes()
    page.feed((tmp_path / "site" / "summary.html").read_text(encoding="utf-8"))
    described = [m for m in order if m in method_descriptions()]
    assert described == [m for m in order if m != "new-method"]
    assert page.notes == [(m, method_descriptions()[m]) for m in described]


class _Notes(HTMLParser):
    """The (method, description) pairs of the summary's list of methods."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.notes: list[tuple[str, str]] = []
        self.inside = False
        self.tag: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "dl" and dict(attrs).get("class") == "method-notes":
            self.inside = True
        elif self.inside and tag in ("dt", "dd"):
            self.tag = tag
            if tag == "dt":
                self.notes.append(("", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "dl":
            self.inside = False
        if tag in ("dt", "dd"):
            self.tag = None

    def handle_data(self, data: str) -> None:
        if self.inside and self.tag:
            m, d = self.notes[-1]
            self.notes[-1] = (m + data.strip(), d) if self.tag == "dt" else (m, d + data)


def test_the_failures_page_lists_each_methods_lowest_judge_classes_in_order(site: Path) -> None:
    found = tables(site / "failures.html")
    assert [cls for cls, _ in found] == ["failures"] * 3  # scratch, pretrained, pixel
    # scratch's judge probabilities: class-0000 0.8, 0001 0.1, 0002 0.6, 0003 0.02; the judge's first
    # choices 0, 7, 2, 7 (the synthetic top-5 labels start with "e").
    head, *rows = found[0][1]
    assert head == ["#", "image", "class", "judge prob", "judge rank", "read as", "D prob"]
    assert [r[2] for r in rows] == [
        "class 3class-0003",  # the label, then the id on its own line
        f"{EVIL}class-0001",
        f"{LABELS[2]}class-0002",
        "class 0class-0000",
    ]
    assert [r[3] for r in rows] == [percent(p).replace(NBSP, " ") for p in (0.02, 0.1, 0.6, 0.8)]
    assert [r[5] for r in rows] == ["7 e", "7 e", "2 e (its class)", "0 e (its class)"]
    assert [r[6] for r in rows] == [percent(p).replace(NBSP, " ") for p in (0.51, 0.7, 0.4, 0.9)]
    # pixel: class-0002 failed, no image: named apart, not in the table.
    pixel = found[2][1][1:]
    assert [r[2][-len("class-0000") :] for r in pixel] == ["class-0000", "class-0001", "class-0003"]
    text = " ".join(parse(site / "failures.html").text)
    assert "1 failed and have no image" in " ".join(text.split())
    # Linked from every page's navigation and from the summary.
    for page in ("index.html", "summary.html", "class-0001.html"):
        assert ("a", "failures.html") in parse(site / page).links, page
    # At most `n` per method, the lowest.
    from atlas.site.tables import failures

    table, _ = load_index(site / "index.parquet")
    worst = failures(target_views(table.to_pylist(), site), ["scratch"], n=2)
    assert [x["t"].id for x in worst[0]["rows"]] == ["class-0003", "class-0001"]


def test_the_imagenet_groups_cover_the_classes_and_name_them_right() -> None:
    from atlas.site.groups import IMAGENET, LETTERS, class_groups, imagenet_names, imagenet_ranges

    names = imagenet_names()
    assert len(imagenet_ranges()) == 29
    groups, scheme = class_groups(dict(enumerate(names)))
    assert scheme == IMAGENET
    of = {c: g.name for g in groups for c in g.classes}
    assert sorted(of) == list(range(1000))
    assert of[207] == "dogs" and names[207] == "golden retriever"
    assert of[151] == of[268] == "dogs" and of[269] != "dogs" and of[150] == "marine mammals"
    assert of[0] == of[6] == of[389] == of[397] == "fish"  # the split ranges are one group each
    assert of[7] == of[24] == of[80] == of[100] == of[127] == of[146] == "birds"
    assert of[355] == "hoofed mammals" and names[355] == "llama" and of[356].startswith("weasels")
    assert of[923] == of[969] == "food and drink" and of[922].startswith("artefacts")  # plate; menu
    assert of[970] == "landscapes" and of[981] == "people" and of[998] == "plants and fungi"
    assert of[999].startswith("artefacts ") and of[398].startswith("artefacts ")
    artefacts = [g for g in groups if g.name.startswith("artefacts ")]
    assert sum(len(g.classes) for g in artefacts) == 922 - 398 + 1 + 1
    assert all(25 <= len(g.classes) <= 90 for g in artefacts), [(g.name, len(g.classes)) for g in artefacts]
    for g in artefacts:  # "artefacts D–G": every name starts with a letter from D to G
        letters = g.name.split(" ", 1)[1].split("\u2013")
        assert all(letters[0] <= names[c][0].upper() <= letters[-1] for c in g.classes), g.name
    assert len({g.slug for g in groups}) == len(groups)
    # A subset of ImageNet's classes keeps the groups, with only the run's classes in them.
    sub, scheme = class_groups({0: "tench", 207: "golden retriever", 208: "Labrador retriever"})
    assert scheme == IMAGENET and [(g.name, g.classes) for g in sub] == [("fish", (0,)), ("dogs", (207, 208))]
    # A label that is not ImageNet's (another classifier): first-letter groups.
    other, scheme = class_groups({0: "tench", 207: "retriever"})
    assert scheme == LETTERS and [(g.name, g.classes) for g in other] == [("classes R\u2013T", (0, 207))]


def test_the_site_groups_imagenet_classes_and_links_the_groups(tmp_path: Path) -> None:
    from atlas.site.groups import imagenet_names

    names = imagenet_names()
    classes = [0, 207, 208, 390, 999]
    index = synthetic_index(
        tmp_path / "run", n_classes=0, classes=classes, labels={c: names[c] for c in classes}, pairs=((0, 207),)
    )
    site = tmp_path / "site"
    assert main(["site", "--index", str(index), "--out", str(site)]) == 0
    data = grid_data(site)
    assert data["groups"] == ["fish", "dogs", "artefacts T"]
    assert {int(c): data["groups"][g] for c, g in data["class_group"].items()} == {
        0: "fish",
        207: "dogs",
        208: "dogs",
        390: "fish",
        999: "artefacts T",
    }
    # groups.html lists each group with its page; a group page lists its classes, nothing else.
    groups = tables(site / "groups.html")[0][1]
    assert [r[0] for r in groups[1:]] == ["fish", "dogs", "artefacts T"] and [r[1] for r in groups[1:]] == [
        "2",
        "2",
        "1",
    ]
    dogs = parse(site / "groups-dogs.html")
    assert {u for t, u in dogs.links if u.startswith("class-")} == {
        f"class-0{c}.html{f}" for c in (207, 208) for f in ("", "#m-scratch", "#m-pretrained", "#m-pixel")
    }
    assert ("a", "index.html#group=dogs") in dogs.links
    assert ("a", "groups-dogs.html") in parse(site / "class-0207.html").links
    assert ("a", "groups.html") in parse(site / "index.html").links
    # The grid's group filter offers every group.
    assert "".join(parse(site / "index.html").text).count("dogs (2)") == 1


def _psnr(a: Path, b: Path) -> float:
    import numpy as np
    from PIL import Image

    x = np.asarray(Image.open(a).convert("RGB"), dtype=float)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=float)
    return float(10 * np.log10(255**2 / ((x - y) ** 2).mean()))


# What the site may spend per image for 1000 classes x 2 methods to stay within 150 MB: the image,
# its thumbnail, its page's share, and its share of its class's exemplars (4 per class, 2 methods).
BYTES_PER_IMAGE = 150e6 / 2000


def test_noisy_images_are_compact_faithful_jpegs_and_the_exact_png_is_one_click_away(tmp_path: Path) -> None:
    from PIL import Image, JpegImagePlugin

    run = tmp_path / "run"
    index = synthetic_index(run, n_classes=6, methods=("scratch", "pretrained"), size=224, style="noisy", n_exemplars=4)
    assert main(["site", "--index", str(index), "--out", str(run / "site")]) == 0
    site = run / "site"
    df = pd.read_parquet(index)
    n_images = int((~df.failed).sum())
    assert n_images == 2 * (6 + 1 + 2)  # the classes, the pair, the 2 filters
    # The full-size copy: JPEG, the PNG's size, no chroma subsampling (4:4:4), close to the PNG.
    png = run / "generate" / "scratch" / "class" / "chunk-0000" / "class-0001.png"
    jpg = site / "images" / "scratch" / "class-0001.jpg"
    with Image.open(jpg) as im:
        assert im.format == "JPEG" and im.size == (224, 224)
        assert JpegImagePlugin.get_sampling(im) == 0  # 4:4:4
    assert _psnr(png, jpg) > 25  # the noise's std is 13 levels; the error's under 15 % of it
    assert jpg.stat().st_size < png.stat().st_size / 2
    # The page links the exact PNG in the run folder; the link resolves to the file itself.
    page = parse(site / "class-0001.html")
    links = [u for t, u in page.links if t == "a" and u.endswith(".png")]
    assert "../generate/scratch/class/chunk-0000/class-0001.png" in links
    assert (site / "../generate/scratch/class/chunk-0000/class-0001.png").resolve() == png.resolve()
    assert "a copy of the folder alone shows every page but not the PNGs" in " ".join(" ".join(page.text).split())

    # Within 150 MB for 1000 classes x 2 methods: the bytes of an image, its thumbnail, its page's
    # share and its share of its class's 4 exemplars (2 per image) stay under 150 MB / 2000.
    def mean(folder: str) -> float:
        sizes = [p.stat().st_size for p in (site / folder).rglob("*") if p.is_file()]
        return sum(sizes) / len(sizes)

    pages = sum(p.stat().st_size for p in site.glob("*-00*.html")) / n_images
    per_image = mean("images") + mean("thumbs") + 2 * mean("exemplars") + pages
    assert per_image < BYTES_PER_IMAGE, per_image

    # --png: the PNGs travel in the site, the links stay inside it.
    assert main(["site", "--index", str(index), "--out", str(tmp_path / "with-png"), "--png"]) == 0
    carried = tmp_path / "with-png" / "png" / "scratch" / "class-0001.png"
    assert carried.read_bytes() == png.read_bytes()
    assert len(list((tmp_path / "with-png" / "png").rglob("*.png"))) == n_images + 6 * 4  # + the exemplars
    page = parse(tmp_path / "with-png" / "class-0001.html")
    assert ("a", "png/scratch/class-0001.png") in page.links
    assert not any(u.startswith("../") for _, u in page.links)


def test_an_image_of_pure_noise_still_encodes(tmp_path: Path) -> None:
    """The noisiest image a method can save, 224 px of uniform noise, is a JPEG larger than the
    buffer Pillow gives an optimised progressive JPEG by default (w * h, at least 64 KiB)."""
    import numpy as np
    from PIL import Image

    from atlas.site.images import FULL_QUALITY, _jpeg

    noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    dst = tmp_path / "noise.jpg"
    _jpeg(Image.fromarray(noise), dst, FULL_QUALITY)
    assert dst.stat().st_size > 65536
    with Image.open(dst) as im:
        assert im.size == (224, 224)
