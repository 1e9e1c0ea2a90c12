"""`atlas site`: the static site of a synthetic index, inspected file by file (no browser here:
tests/test_site_browser.py opens it in Chromium)."""

from __future__ import annotations

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
from atlas.site import MARKER, METHOD_DESCRIPTIONS, comparison, load_index, method_order, slug, target_views
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
        MARKER,
    ):
        assert name in names, name
    # Every image but the failed one, at full size and as a thumbnail; the exemplars.
    assert len(list((site / "images").rglob("*.png"))) == 3 * 7 - 1
    assert len(list((site / "thumbs").rglob("*.jpg"))) == 3 * 7 - 1
    assert len(list((site / "exemplars").glob("*.png"))) == 4 * 2
    assert not (site / "images" / "pixel" / "class-0002.png").exists()
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
    assert len(pages) == 7 + 7  # the targets and index, summary, pairs, layers, layer, provenance, downloads
    checked = 0
    for path, page in pages.items():
        for tag, url in page.links:
            if url.startswith("data:"):
                assert tag == "link" and url == "data:,", (path.name, url)  # the empty favicon
                continue
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc and not url.startswith("/"), (path.name, url)
            target = site / unquote(parts.path) if parts.path else path
            assert target.resolve().is_file(), (path.name, url)
            assert target.resolve().is_relative_to(site.resolve()), (path.name, url)
            if parts.fragment:
                assert parts.fragment in pages[target].ids, (path.name, url)
            checked += 1
    assert checked > 100
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
    assert summary.count("<svg") == 3 * 3 + 3 * 3 + 3 * 2  # class and pair: 3 scores; filter: 2; x 3 methods


def test_summary_means_are_the_index_means(site: Path) -> None:
    df = pd.read_parquet(site / "index.parquet")
    mean = df[(df.kind == "class") & (df.method == "scratch")]["judge_prob"].mean()
    assert f"<td>{percent(mean)}</td>" in (site / "summary.html").read_text()


def test_slug_is_file_name_safe_and_unique() -> None:
    for text in ("../../etc/passwd", "a/b", "<script>", ".hidden", "index", "layer-x", "", "x" * 300):
        s = slug(text)
        assert SAFE_NAME.match(s) and not s.startswith(".") and len(s) < 120, (text, s)
        assert s not in ("index", "layer-x")
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
    assert [cls for cls, _ in found][:2] == ["comparison", "summary"]  # first, before the per-kind tables
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
    described = [m for m in order if m in METHOD_DESCRIPTIONS]
    assert described == [m for m in order if m != "new-method"]
    assert page.notes == [(m, METHOD_DESCRIPTIONS[m]) for m in described]


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
