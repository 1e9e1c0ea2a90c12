"""Report on a finished run: the figures docs/benchmarks.md quotes about a workflow run, read from
the run folder alone, so that they can be checked against it.

    uv run python benchmarks/run_report.py results/all-classes [--time /usr/bin/time-v-output]
        [--worst 15] [--figures docs/img [--class-page class-0593]]

Prints:

- jobs: how many of each kind the run's `benchmarks/` folder timed, the sum of their wall and CPU
  seconds (Snakemake's per-job benchmark files), and each stage's share; with `--time FILE` (the
  output of `/usr/bin/time -v` around `snakemake`) the run's own wall time, CPU time and peak RSS;
- the generation jobs' start-up share: a job's wall seconds against its targets' optimisation
  seconds (the records' `seconds` per target times the targets);
- the autoencoder (when the run trained one): its epochs and validation ratio (train.json);
- images: per method and kind, the rows, the images and the failed targets;
- the site: its size on disk (files, MiB) and the size of its images;
- quality: per method, over its class targets, D > 0.5, judge top-1, top-5 and mean judge
  probability, as counts and shares;
- the classes each method fails to draw: the `--worst` lowest judge probabilities with what the
  judge read instead, and the judge's top-5 share per group of ImageNet classes (the site's
  groups, atlas/imagenet_groups.tsv).

With `--figures DIR`, it also writes the figures the documentation quotes from a run, so that
they are remade from the run rather than copied by hand:

- `DIR/quality.md`: the site's summary table of the class targets (per method: D > 0.5, judge
  top-1 and top-5, mean judge probability, distinct judge top-1 labels), as Markdown, under a line
  naming the run, its commit and this command; docs/benchmarks.md quotes it verbatim;
- `DIR/atlas-class-page.jpg` and `DIR/atlas-grid.jpg`: screenshots of the run's site (a class page,
  `--class-page`, and the grid), taken with headless Chromium (`--chromium`).

A benchmark report, not a test.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from atlas.index import read_provenance
from atlas.io import atomic_path, write_text
from atlas.site.groups import imagenet_ranges

QUALITY_COLUMNS = (
    "method",
    "D prob > 0.5",
    "judge top-1",
    "judge top-5",
    "mean judge prob",
    "distinct judge top-1 labels",
)
SCREENSHOT_SIZE = (1400, 1000)  # the browser window, in CSS pixels
SCREENSHOT_WIDTH = 980  # the saved JPEG's width in pixels


def group_of(index: int) -> str:
    """The class's group in atlas/imagenet_groups.tsv (the site's groups, artefacts not split)."""
    return next(group for first, last, group in imagenet_ranges() if first <= index <= last)


def parse_time(path: Path) -> dict[str, float]:
    """Wall, CPU and peak RSS from `/usr/bin/time -v` output."""
    text = path.read_text()
    out: dict[str, float] = {}
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    if m:
        parts = [float(p) for p in m.group(1).split(":")]
        out["wall_s"] = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    for key, label in (("user_s", "User time (seconds)"), ("sys_s", "System time (seconds)")):
        m = re.search(re.escape(label) + r": (\S+)", text)
        if m:
            out[key] = float(m.group(1))
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        out["peak_rss_gib"] = int(m.group(1)) / 2**20
    return out


def job_table(run: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((run / "benchmarks").rglob("*.tsv")):
        rel = tsv.relative_to(run / "benchmarks").with_suffix("")
        bench = pd.read_csv(tsv, sep="\t")
        stage = rel.parts[0] if rel.parts[0] != "generate" else f"generate {rel.parts[1]}"
        rows.append(
            {
                "job": str(rel),
                "stage": stage,
                "wall_s": float(bench["s"].iloc[0]),
                "cpu_s": float(bench["cpu_time"].iloc[0]),
            }
        )
    return pd.DataFrame(rows)


def folder_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def quality_rows(index: pd.DataFrame) -> list[list[str]]:
    """The site summary's comparison of the class targets (atlas.site.tables.comparison): per method
    in the index's order, out of its class targets (a failed one counts as a miss), D > 0.5, judge
    top-1, top-5, the mean judge probability over its images, and the distinct judge top-1 classes."""
    classes = index[(index.kind == "class") & (index.seed_index.fillna(0) == 0)]
    rows = []
    for method, got in classes.groupby("method", sort=False):
        n = len(got)
        images = got[~got.failed]
        distinct = {int(t[0]) for t in images.judge_top5 if t is not None and len(t)}
        rows.append(
            [
                method,
                f"{int((got.d_prob > 0.5).sum())} / {n}",
                str(int((got.judge_rank == 1).sum())),
                str(int((got.judge_rank <= 5).sum())),
                f"{images.judge_prob.mean():.3f}",
                str(len(distinct)),
            ]
        )
    return rows


def quality_markdown(run: Path, index: pd.DataFrame) -> str:
    """quality.md: the table under a line that names the run it was read from."""
    provenance = read_provenance(run / "index.parquet")
    commit = str(provenance.get("git_commit") or "unknown")[:7]
    shown = f"results/{run.name}" if run.parent.name == "results" else str(run)
    judge = ", ".join(sorted(set(index.judge.dropna()))) or "none"
    lines = [
        f"Run `{run.name}` (atlas commit {commit}, config sha256 {str(provenance.get('config_sha256', ''))[:12]}), "
        f"class targets judged by {judge}; written by `uv run python benchmarks/run_report.py {shown} --figures DIR`.",
        "",
        "| " + " | ".join(QUALITY_COLUMNS) + " |",
        "|" + "---|" * len(QUALITY_COLUMNS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in quality_rows(index)]
    return "\n".join(lines) + "\n"


def screenshot(chromium: str, page: Path) -> bytes:
    """A headless Chromium screenshot of `page`, as a JPEG SCREENSHOT_WIDTH pixels wide."""
    from PIL import Image

    if not page.is_file():
        raise SystemExit(f"{page} does not exist; give a run whose site is built, and a page it has (--class-page)")
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "shot.png"
        cmd = [
            chromium, "--headless", "--no-sandbox", "--hide-scrollbars", f"--screenshot={png}",
            f"--window-size={SCREENSHOT_SIZE[0]},{SCREENSHOT_SIZE[1]}", page.resolve().as_uri(),
        ]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if res.returncode != 0 or not png.is_file():
            tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"{chromium} could not take a screenshot of {page}: {tail}")
        with Image.open(png) as image:
            shot = image.convert("RGB")
        height = round(shot.height * SCREENSHOT_WIDTH / shot.width)
        buf = io.BytesIO()
        shot.resize((SCREENSHOT_WIDTH, height), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=70, optimize=True)
    return buf.getvalue()


def write_figures(run: Path, index: pd.DataFrame, out: Path, class_page: str, chromium: str) -> None:
    """quality.md and the two screenshots of the run's site, into `out`."""
    site = run / "site"
    if not (site / "index.html").is_file():
        raise SystemExit(f"{site}/index.html does not exist; --figures needs a run whose site is built")
    found = shutil.which(chromium)
    if found is None:
        raise SystemExit(f"--chromium {chromium}: no such program; install Chromium or pass its path")
    page = class_page if class_page.endswith(".html") else f"{class_page}.html"
    table = quality_markdown(run, index)
    shots = {
        "atlas-class-page.jpg": screenshot(found, site / page),
        "atlas-grid.jpg": screenshot(found, site / "index.html"),
    }
    for name, data in shots.items():  # every figure taken before any is written
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(data)
    write_text(out / "quality.md", table)
    print(f"figures: {out}/quality.md, {out}/atlas-class-page.jpg ({page}), {out}/atlas-grid.jpg")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="the run folder, results/<run>")
    ap.add_argument("--time", type=Path, default=None, help="/usr/bin/time -v output of the snakemake command")
    ap.add_argument("--worst", type=int, default=15, help="lowest-judge classes to list per method")
    ap.add_argument("--figures", type=Path, default=None, help="write quality.md and the site's screenshots here")
    ap.add_argument("--class-page", default="class-0593", help="the class page to screenshot (default: the harmonica)")
    ap.add_argument("--chromium", default="chromium", help="the Chromium program for the screenshots")
    args = ap.parse_args(argv)
    run: Path = args.run
    index_path = run / "index.parquet"
    if not index_path.is_file():
        raise SystemExit(f"{index_path} does not exist; give a finished run folder (results/<run>)")
    index = pd.read_parquet(index_path)

    print(f"# {run}\n")
    if args.time is not None:
        t = parse_time(args.time)
        cpu = t.get("user_s", 0.0) + t.get("sys_s", 0.0)
        print(
            f"run: {t.get('wall_s', float('nan')) / 60:.1f} min wall, {cpu:.0f} CPU-s "
            f"(user {t.get('user_s', 0):.0f} + sys {t.get('sys_s', 0):.0f}), peak RSS {t.get('peak_rss_gib', 0):.1f} GiB"
        )
    jobs = job_table(run)
    if len(jobs):
        print(
            f"jobs timed: {len(jobs)}; their wall seconds sum to {jobs.wall_s.sum():.0f}, CPU seconds to {jobs.cpu_s.sum():.0f}"
        )
        by_stage = jobs.groupby("stage").agg(jobs=("job", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"))
        by_stage["share"] = by_stage.wall_s / by_stage.wall_s.sum()
        print(by_stage.sort_values("wall_s", ascending=False).to_string(float_format=lambda v: f"{v:.2f}"))
    gen = index[index["chunk"].notna()].groupby("chunk").agg(targets=("target_id", "size"), work_s=("seconds", "sum"))
    if len(jobs) and len(gen):
        walls = {
            j.removeprefix("generate/"): w
            for j, w in zip(jobs.job, jobs.wall_s, strict=True)
            if j.startswith("generate/")
        }
        gen["job_s"] = [walls.get(c.removeprefix("generate/"), float("nan")) for c in gen.index]
        gen["overhead"] = 1 - gen.work_s / gen.job_s
        big = gen[gen.targets >= 10]
        if len(big):
            print(
                f"\ngeneration jobs of 10+ targets: {len(big)}; outside the optimisation "
                f"(start-up, loading D, writing): median {big.overhead.median():.1%}, max {big.overhead.max():.1%} of the job"
            )

    for train in sorted((run / "autoencoder").glob("*/train.json")):
        f = json.loads(train.read_text()).get("figures", {})
        print(
            f"\nautoencoder {train.parent.name}: {f.get('epochs')} epochs in {f.get('train_seconds', 0):.0f} s, "
            f"validation MSE {f.get('val_mse', float('nan')):.4f} against {f.get('mean_image_val_mse', float('nan')):.4f} "
            f"for the mean training image (ratio {f.get('ratio', float('nan')):.2f})"
        )

    print("\nimages:")
    counts = index.groupby(["method", "kind"]).agg(rows=("target_id", "size"), failed=("failed", "sum"))
    counts["images"] = counts.rows - counts.failed
    print(counts.to_string())
    print(f"total: {len(index)} rows, {int((~index.failed).sum())} images, {int(index.failed.sum())} failed")
    for _, row in index[index.failed].iterrows():
        print(f"  failed: {row['method']} {row['target_id']}: {row['reason']}")

    site = run / "site"
    if site.is_dir():
        n, size = folder_size(site)
        print(f"\nsite: {n} files, {size / 2**20:.1f} MiB")
        for sub in sorted(p for p in site.iterdir() if p.is_dir()):
            n, size = folder_size(sub)
            print(f"  {sub.name}/: {n} files, {size / 2**20:.1f} MiB")

    classes = index[(index.kind == "class") & ~index.failed].copy()
    print("\nquality over each method's classes (judge: " + ", ".join(sorted(set(classes.judge.dropna()))) + "):")
    print(f"{'method':<11}{'classes':>8}{'D>0.5':>8}{'top-1':>8}{'top-5':>8}{'judge p':>9}")
    for method, rows in classes.groupby("method", sort=False):
        n = len(rows)
        print(
            f"{method:<11}{n:>8}{(rows.d_prob > 0.5).mean():>8.1%}{(rows.judge_rank == 1).mean():>8.1%}"
            f"{(rows.judge_rank <= 5).mean():>8.1%}{rows.judge_prob.mean():>9.3f}"
        )
    classes["group"] = [group_of(int(c)) for c in classes.class_index]
    big = classes.groupby("method").filter(lambda r: len(r) >= 100)
    if len(big):
        print("\njudge top-5 share by group of classes (methods with 100+ classes):")
        table = big.assign(top5=big.judge_rank <= 5).pivot_table(
            index="group", columns="method", values="top5", aggfunc="mean"
        )
        table.insert(0, "classes", big.groupby("group").class_index.nunique())
        print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    for method, rows in big.groupby("method"):
        worst = rows.sort_values("judge_prob").head(args.worst)
        print(f"\n{method}: the {len(worst)} classes the judge reads least")
        for _, r in worst.iterrows():
            read = r.judge_top5_labels[0] if len(r.judge_top5_labels) else "?"
            print(
                f"  {int(r.class_index):>4} {str(r.label)[:28]:<28} judge p {r.judge_prob:.4f} rank {int(r.judge_rank):>4}, "
                f"read as {read}; D p {r.d_prob:.2f}"
            )
    if args.figures is not None:
        write_figures(run, index, args.figures, args.class_page, args.chromium)
    return 0


if __name__ == "__main__":
    sys.exit(main())
