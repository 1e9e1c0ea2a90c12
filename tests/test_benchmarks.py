"""The benchmark scripts that the GPU measurement depends on: the verdict's arithmetic, and the GPU
suite (benchmarks/gpu_suite.sh) end to end at toy sizes on the CPU, so it cannot rot between runs
on a GPU. Figures are not checked here (benchmarks, not timed tests)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _verdict() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("gpu_verdict", BENCH / "gpu_verdict.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def _report(method: str, rows: list[tuple[int, float, float]]) -> dict[str, Any]:
    return {
        "device": "device cuda:0 (NVIDIA H100 80GB HBM3)",
        "torch": "2.13.0",
        "runtime": {"precision": "bf16"},
        "classifier": "torchvision:vgg16",
        "weights": "random",
        "input_size": 224,
        "reduced": False,
        "width": 1.0,
        "peak_tflops": 989.0,
        "rows": [
            {"method": method, "chunk": c, "target_steps_per_s": r, "tflops": f * 989.0, "fraction_of_peak": f}
            for c, r, f in rows
        ]
        + [{"method": "D alone", "chunk": 64, "target_steps_per_s": 1e9, "tflops": 0.0, "fraction_of_peak": 0.9}],
    }


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_the_verdict_takes_the_best_chunk_and_adds_one_start_up_per_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pre = _write(
        tmp_path / "pre.json", _report("pretrained", [(1, 50.0, 0.02), (64, 2000.0, 0.31), (128, 1900.0, 0.30)])
    )
    scr = _write(tmp_path / "scr.json", _report("scratch", [(64, 1000.0, 0.25)]))
    over = _write(
        tmp_path / "over.json",
        {
            "method": "pretrained",
            "chunk": 64,
            "classifier": "torchvision:vgg16",
            "device": "cuda",
            "overhead_wall_s": 20.0,
            "imports_wall_s": 6.0,
        },
    )
    assert _verdict().main(["--throughput", str(pre), "--throughput", str(scr), "--overhead", str(over)]) == 0
    out = capsys.readouterr().out
    assert (
        "best chunk 64: 2000.0 target-steps/s" in out and "31.0% of the bf16 peak" in out and "(goal 30%): met" in out
    )
    # 1000 x 1200 / 2000 + 16 jobs x 20 s, and 1000 x 500 / 1000 + 16 x 20 s: 600 + 320 + 500 + 320 s.
    assert f"{(600 + 320 + 500 + 320) / 60:.1f} min (goal under 30 min): met" in out
    assert f"{math.ceil(1000 / 64)} jobs x 20.0 s" in out
    assert "caveat" not in out  # an H100 at the paper's sizes


def test_the_verdict_says_not_met_and_names_the_caveats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slow = _report("pretrained", [(16, 100.0, 0.12)])
    slow["device"], slow["input_size"] = "device cuda:0 (NVIDIA H200)", 64
    pre = _write(tmp_path / "pre.json", slow)
    scr = _write(tmp_path / "scr.json", _report("scratch", [(16, 100.0, 0.1)]))
    over = _write(
        tmp_path / "over.json",
        {
            "method": "pretrained",
            "chunk": 16,
            "classifier": "torchvision:vgg16",
            "device": "cuda",
            "overhead_wall_s": 10.0,
            "imports_wall_s": 5.0,
        },
    )
    _verdict().main(["--throughput", str(pre), "--throughput", str(scr), "--overhead", str(over)])
    out = capsys.readouterr().out
    assert "12.0% of the bf16 peak" in out and "(goal 30%): NOT met" in out and "(goal under 30 min): NOT met" in out
    assert "not the paper's sizes" in out and "an H200 has the H100 SXM's bf16 peak" in out


def test_the_verdict_refuses_a_missing_or_partial_report_in_one_line(tmp_path: Path) -> None:
    over = _write(tmp_path / "over.json", {})
    with pytest.raises(SystemExit, match=r"throughput file .*nope.json does not exist; run benchmarks/throughput.py"):
        _verdict().main(["--throughput", str(tmp_path / "nope.json"), "--overhead", str(over)])
    pre = _write(tmp_path / "pre.json", _report("pretrained", [(1, 1.0, 0.1)]))
    with pytest.raises(SystemExit, match="no scratch rows in .*; run throughput.py with --methods pretrained,scratch"):
        _verdict().main(["--throughput", str(pre), "--overhead", str(over)])
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SystemExit, match="is not JSON"):
        _verdict().main(["--throughput", str(bad), "--overhead", str(over)])


def test_the_gpu_suite_runs_every_step_at_toy_sizes_on_a_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    res = subprocess.run(
        ["bash", str(BENCH / "gpu_suite.sh"), "--smoke"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    log = (out / "suite.log").read_text()
    assert res.returncode == 0, log[-4000:] + res.stderr[-2000:]
    lines = (out / "summary.tsv").read_text().splitlines()
    steps = dict(line.split("\t")[:2] for line in lines[1:])
    assert steps == dict.fromkeys(
        [
            "environment",
            "throughput-pretrained",
            "throughput-scratch",
            "job-overhead",
            "verdict",
            "throughput-fp32",
            "throughput-cudnn-benchmark",
            "precision",
            "scratch-batching",
        ],
        "0",
    )
    # What the suite leaves in $OUT: at most 8 files, each named plainly.
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(name.replace("-", "").replace(".", "").replace("_", "").isalnum() for name in files)
    tp = json.loads((out / "throughput-pretrained.json").read_text())
    assert [(r["method"], r["chunk"]) for r in tp["rows"]] == [
        ("pretrained", 1),
        ("pretrained", 2),
        ("D alone", 1),
        ("D alone", 2),
    ]
    assert all(r["flop_per_step"] > 0 and r["target_steps_per_s"] > 0 for r in tp["rows"])
    assert json.loads((out / "throughput-cudnn.json").read_text())["cudnn_benchmark"] is True
    assert json.loads((out / "overhead.json").read_text())["overhead_wall_s"] > 0
    assert "of the fp32 peak" in log and "full 1000-class atlas, both methods, one device" in log
    assert "caveat: not a GPU run" in log


def test_the_gpu_suite_refuses_an_unknown_argument() -> None:
    res = subprocess.run(["bash", str(BENCH / "gpu_suite.sh"), "--fast"], capture_output=True, text=True, check=False)
    assert res.returncode == 2 and "unknown argument '--fast'; the only one is --smoke" in res.stderr


def test_the_run_report_reads_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/run_report.py on a synthetic run of 120 classes: counts, the quality table, the
    groups of classes and the worst-drawn classes, lowest judge probability first."""
    import importlib.util

    import pandas as pd

    from tests.site_synthetic import synthetic_index

    index = synthetic_index(
        tmp_path / "run", n_classes=120, methods=("fourier", "pixel"), failed=[("pixel", "class-0003")]
    )
    spec = importlib.util.spec_from_file_location(
        "run_report", Path(__file__).parents[1] / "benchmarks" / "run_report.py"
    )
    assert spec and spec.loader
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    assert report.main([str(tmp_path / "run"), "--worst", "3"]) == 0
    out = capsys.readouterr().out
    df = pd.read_parquet(index)
    assert f"total: {len(df)} rows, {len(df) - 1} images, 1 failed" in out
    assert "failed: pixel class-0003" in out
    fourier = df[(df.method == "fourier") & (df.kind == "class")]
    row = next(line for line in out.splitlines() if line.startswith("fourier ") and "%" in line)
    assert row.split()[1] == "120" and row.split()[4] == f"{(fourier.judge_rank <= 5).mean():.1%}"
    assert report.group_of(207) == "dogs" and report.group_of(0) == "fish"
    worst = fourier.sort_values("judge_prob").head(3)
    listed = out.split("fourier: the 3 classes the judge reads least")[1].splitlines()[1:4]
    assert [int(line.split()[0]) for line in listed] == [int(c) for c in worst.class_index]


def _peers() -> ModuleType:
    """benchmarks/peers.py as a module (it imports its sibling quality.py)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("peers", BENCH / "peers.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tools", "lucent-200"], "unknown tool 'lucent-200' in --tools; use some of atlas-fourier, "),
        (["--tools", ","], "--tools ',' names no tool"),
        (["--classes", "94,x"], "--classes '94,x' is not a list of class indices"),
        (["--classes", "1000"], r"--classes: 1000 is not an ImageNet class index \(0-999\)"),
        (["--classes", "94,94"], "names a class twice"),
        (["--tools", "atlas-maco", "--classes", "94", "--dataset", "/nonexistent"], "--dataset /nonexistent: no such"),
    ],
)
def test_peers_refuses_a_bad_input_in_one_line(argv: list[str], message: str) -> None:
    """Checked before any model is loaded: each a one-line SystemExit."""
    with pytest.raises(SystemExit, match=message) as exc:
        _peers().main(argv)
    assert "\n" not in str(exc.value.code)


def test_peers_refuses_a_malformed_option_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _peers().main(["--seed", "x"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "peers.py: argument --seed: invalid int value: 'x'\n"


def test_peers_without_the_peers_group_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a default install (`uv sync`, no peers group) says; Atlas's own rows need nothing more."""
    peers = _peers()
    for name in ("lucent", "lucent.optvis.render", "lucent.optvis.param", "horama", "horama.maco_fv", "horama.plots"):
        monkeypatch.setitem(sys.modules, name, None)  # an import of it now fails, installed or not
    for tools in ("lucent-100", "horama-100", "atlas-fourier,lucent-512"):
        with pytest.raises(SystemExit, match="need the peers group, which is not installed") as exc:
            peers.main(["--tools", tools, "--classes", "94"])
        assert "`uv sync --group peers`" in str(exc.value.code) and "\n" not in str(exc.value.code)
    assert peers.load_peers(["atlas-fourier", "atlas-maco"]) == {}


def test_peers_run_lucent_and_horama_on_a_tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both peers for 2 steps on a tiny classifier, judged and drawn as the benchmark does; skipped
    without the peers group (the default install)."""
    for name in ("lucent", "horama", "einops"):
        pytest.importorskip(name, reason=f"{name} is in the optional peers group (`uv sync --group peers`)")
    from tests.tiny import tiny_classifier

    peers = _peers()
    modules = peers.load_peers(["lucent-100", "horama-100"])
    d = tiny_classifier()
    model = peers.RGBModel(d)
    monkeypatch.chdir(tmp_path)  # horama's spectrum file must not land in the working folder
    out = tmp_path / "out"
    say: list[str] = []
    names, cpu = peers.run_lucent(modules, model, [1, 2], 2, 0, out / "lucent", size=32, progress=say.append)
    again, _ = peers.run_lucent(modules, model, [1], 2, 0, out / "again", size=32, progress=say.append)
    assert names == ["0001.png", "0002.png"] and cpu > 0
    first = np.asarray(Image.open(out / "lucent" / "0001.png"))
    assert first.shape == (32, 32, 3) and np.array_equal(first, np.asarray(Image.open(out / "again" / "0001.png")))
    assert all(not m._forward_hooks for m in model.modules())  # lucent's hooks removed after each render
    crops, frames, cpu = peers.run_horama(
        modules, model, [1, 2], 2, 0, out / "horama", canvas=64, centre_side=16, progress=say.append
    )
    assert cpu > 0 and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    frame = np.asarray(Image.open(out / "horama" / frames[0]))
    crop = np.asarray(Image.open(out / "horama" / crops[0]))
    # Shown as horama shows it: clipped at the percentiles and stretched to the full range.
    assert frame.shape == (64, 64, 3) and frame.min() == 0 and frame.max() == 255
    assert np.array_equal(crop, frame[24:40, 24:40])
    assert len(say) == 5 and say[0].startswith("  1/2 class 1 class 1: ")
    results = {}
    for key, folder, files in (("lucent-2", out / "lucent", names), ("horama-2", out / "horama", crops)):
        records = peers.records_of(d, [1, 2], folder, files)
        results[key] = peers.judge_rows(d, d, records, folder)
        row = peers.summarise(key, results[key], 2, float("nan"), cpu)
        assert 0 <= row["judge_top5"] <= 2 and 0 < row["saturation"] <= 1
    peers.contact_sheet(results, (1, 2), out / "sheet.png")
    with Image.open(out / "sheet.png") as sheet:
        assert sheet.size[1] > 2 * 160


def test_the_run_report_writes_the_quality_table_the_docs_quote(tmp_path: Path) -> None:
    """`run_report.py RUN --figures DIR`'s quality.md: the site summary's counts, a failed target
    counting as a miss, under a line naming the run; without a built site it stops in one line and
    writes nothing."""
    import pandas as pd

    from tests.site_synthetic import synthetic_index

    run = tmp_path / "results" / "demo"
    index_path = synthetic_index(run, n_classes=6, methods=("fourier", "pixel"), failed=[("pixel", "class-0003")])
    spec = importlib.util.spec_from_file_location("run_report", BENCH / "run_report.py")
    assert spec and spec.loader
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    df = pd.read_parquet(index_path)
    text = report.quality_markdown(run, df)
    lines = text.splitlines()
    assert lines[0].startswith("Run `demo`") and "run_report.py results/demo --figures DIR" in lines[0]
    rows = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ") for line in lines[4:]}
    assert list(rows) == ["fourier", "pixel"]
    pixel = df[(df.method == "pixel") & (df.kind == "class")]
    assert rows["pixel"][1] == f"{int((pixel.d_prob > 0.5).sum())} / 6"
    assert rows["pixel"][3] == str(int((pixel.judge_rank <= 5).sum()))
    assert rows["pixel"][4] == f"{pixel[~pixel.failed].judge_prob.mean():.3f}"
    with pytest.raises(SystemExit, match="site/index.html does not exist") as exc:
        report.main([str(run), "--figures", str(tmp_path / "figures")])
    assert "\n" not in str(exc.value.code) and not (tmp_path / "figures").exists()
