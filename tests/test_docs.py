"""The shell commands of README.md and docs/*.md, as written there: every command of a fenced
`bash` or `sh` block is checked here, or is listed in NOT_RUN_HERE with the reason it cannot be.

- `uv run snakemake ...` on one machine: dry-run (`-n`) from the repository root, as a user types
  it; the nested-key `--config` form is also checked to reach the job it sets.
- `uv run atlas ...`: parsed by the `atlas` command's own parser (`--help` runs).
- `uv run python SCRIPT ...` and `python -m MODULE`: the script or module exists and takes every
  option the docs give it; `python -c` one-liners run on a synthetic run folder.
- `uv run TOOL` (pytest, ruff, mypy, snakefmt) and `bash SCRIPT`: the tool is installed, the
  script exists.

Also: the quality table of docs/benchmarks.md is docs/img/quality.md, which
`benchmarks/run_report.py --figures` writes, and Snakemake still refuses the dotted `--config`
form that the docs warn about.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from atlas.cli import main_parser
from tests.test_workflow import _env

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
TIMEOUT_S = 300

# Commands the docs give that cannot run on a machine without SLURM, a GPU, ImageNet or the
# internet beyond PyPI: each with its reason. A command listed here that the docs no longer give
# fails the test, so the list stays the docs' own.
NEEDS_SLURM = "needs a SLURM cluster (docs/operations.md was run on the test cluster's)"
NOT_RUN_HERE = {
    "uv run snakemake --cores all --profile slurm": NEEDS_SLURM,
    "uv run snakemake --cores all --profile slurm --unlock": NEEDS_SLURM,
    "sacct -j 80 -o JobID,State,ExitCode,Elapsed,Timelimit,ReqMem,MaxRSS": NEEDS_SLURM,
    "squeue --me -o '%.8i %.9T %.30k %R'": NEEDS_SLURM,
    "sinfo -R": NEEDS_SLURM,
    "squeue --me --name fb60da6a-5c27-4e81-b84b-9ec8c1af6235": NEEDS_SLURM,
    "scancel --name fb60da6a-5c27-4e81-b84b-9ec8c1af6235": NEEDS_SLURM,
    "sbatch --job-name atlas-head --time 2-00:00:00 --mem 4G --cpus-per-task 2 --output atlas-head-%j.log "
    '--wrap "uv run snakemake --cores all --profile slurm"': NEEDS_SLURM,
    "uv run python -c \"import torchvision.models as m; m.get_model('vgg16', weights='DEFAULT'); "
    "m.get_model('resnet50', weights='DEFAULT')\"": "downloads torchvision's weights from download.pytorch.org",
    "OUT=/tmp/gpu-figures bash benchmarks/gpu_suite.sh": "needs a GPU (its --smoke variant runs in tests/test_benchmarks.py)",
}
# A nested key set on the command line: the dry run must pass this value to the job that uses it.
IMAGENET = "/data/imagenet/train"


def doc_commands() -> list[tuple[str, str]]:
    """(file, command) for every command of every fenced bash/sh block: continuation lines joined,
    comment lines and trailing comments dropped."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"^```(?:bash|sh)\n(.*?)^```", doc.read_text(), re.S | re.M):
            for line in block.replace("\\\n", " ").splitlines():
                tokens = shlex.split(line, comments=True)
                if tokens:
                    found.append((doc.name, shlex.join(tokens)))
    return found


COMMANDS = doc_commands()


def _key(command: str) -> str:
    """A NOT_RUN_HERE key in the form doc_commands() gives it."""
    return shlex.join(shlex.split(command, comments=True))


def _not_run_here() -> dict[str, str]:
    return {_key(k): v for k, v in NOT_RUN_HERE.items()}


def _readme_yaml(first_line: str) -> str:
    """The README's yaml block that starts with `first_line`."""
    for block in re.findall(r"^```yaml\n(.*?)^```", (REPO / "README.md").read_text(), re.S | re.M):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"README.md has no yaml block starting {first_line!r}")


def test_the_docs_give_commands_and_every_one_is_checked_or_listed() -> None:
    commands = {c for _, c in COMMANDS}
    assert len(commands) >= 20, commands
    listed = _not_run_here()
    assert not set(listed) - commands, f"NOT_RUN_HERE lists commands the docs no longer give: {set(listed) - commands}"
    for doc, command in COMMANDS:
        tokens = shlex.split(command)
        if command in listed:
            continue
        assert tokens[0] in {"uv", "bash"} or "=" in tokens[0], f"{doc}: {command!r} is neither checked nor listed"
        if "--profile" in tokens and "slurm" in tokens:
            raise AssertionError(f"{doc}: {command!r} needs SLURM: list it in NOT_RUN_HERE")


def _runnable(prefix: list[str]) -> list[tuple[str, list[str]]]:
    """The checked commands whose tokens, after VAR=VALUE settings, start with `prefix`."""
    out = []
    listed = _not_run_here()
    for doc, command in COMMANDS:
        if command in listed:
            continue
        tokens = shlex.split(command)
        while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):
            tokens = tokens[1:]
        if tokens[: len(prefix)] == prefix:
            out.append((doc, tokens[len(prefix) :]))
    return out


SNAKEMAKE = _runnable(["uv", "run", "snakemake"])


@pytest.mark.parametrize(("doc", "args"), SNAKEMAKE, ids=[shlex.join(a) for _, a in SNAKEMAKE])
def test_a_snakemake_command_of_the_docs_dry_runs(doc: str, args: list[str], tmp_path: Path) -> None:
    """As written, from the repository root, with -n (and -p, to see the jobs' commands). Files
    the command names that a reader makes first are made here: the README's my-atlas.yaml (from
    its yaml block), an ImageNet folder in place of /data/imagenet/train, the folder of
    docs/operations.md's example."""
    args = list(args)
    sets_imagenet = any(IMAGENET in a for a in args)
    if "my-atlas.yaml" in args:
        config = tmp_path / "my-atlas.yaml"
        config.write_text(_readme_yaml("run: my-atlas"))
        args[args.index("my-atlas.yaml")] = str(config)
    imagenet = tmp_path / "imagenet" / "train"
    (imagenet / "n01440764").mkdir(parents=True)
    args = [a.replace(IMAGENET, str(imagenet)) for a in args]
    for arg in args:
        for folder in re.findall(r"root: (/tmp/[\w-]+)", arg):
            Path(folder).mkdir(exist_ok=True)
    proc = subprocess.run(
        [str(BIN / "snakemake"), *args, "-n", "-p"],
        cwd=REPO,
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{doc}: snakemake {shlex.join(args)}:\n{text[-3000:]}"
    assert "This was a dry-run" in text or "Nothing to be done" in text, text[-2000:]
    if sets_imagenet:
        # The nested key reached the job that reads it, beside the config file's other dataset keys.
        assert f"--source imagenet --root {imagenet} --classes 151-268" in text, text[-3000:]


def test_snakemake_still_refuses_the_dotted_config_form_the_docs_warn_about() -> None:
    """README.md and docs/operations.md say `--config dataset.root=...` is refused by Snakemake
    while it reads the command line; when a Snakemake release accepts it, they must change."""
    proc = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--cores", "1", "--config", "dataset.root=/data/imagenet/train"],
        cwd=REPO,
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode != 0
    assert "Config entry must start with a valid identifier" in proc.stdout + proc.stderr
    for doc in ("README.md", "docs/operations.md"):
        assert "Config entry must start with a valid identifier" in (REPO / doc).read_text()


ATLAS = _runnable(["uv", "run", "atlas"])


@pytest.mark.parametrize(("doc", "args"), ATLAS, ids=[shlex.join(a) for _, a in ATLAS])
def test_an_atlas_command_of_the_docs_parses(doc: str, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    parser = main_parser()
    try:
        parsed = parser.parse_args(args)
    except SystemExit as exc:  # --help prints and exits 0; a bad option exits 2
        assert exc.code == 0 and "usage:" in capsys.readouterr().out, f"{doc}: atlas {shlex.join(args)}"
        return
    assert parsed.command == args[0], f"{doc}: atlas {shlex.join(args)}"


PYTHON = _runnable(["uv", "run", "python"])


@pytest.mark.parametrize(("doc", "args"), PYTHON, ids=[shlex.join(a)[:80] for _, a in PYTHON])
def test_a_python_command_of_the_docs_names_what_exists(doc: str, args: list[str], tmp_path: Path) -> None:
    """A script or module and the options the docs give it; a `-c` one-liner runs on a synthetic
    run folder in place of results/atlas/."""
    if args[0] == "-c":
        from tests.site_synthetic import synthetic_index

        synthetic_index(tmp_path / "results" / "atlas", n_classes=3, failed=[("pixel", "class-0001")])
        proc = subprocess.run(
            [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
        assert proc.returncode == 0, f"{doc}: {proc.stderr[-2000:]}"
        assert "class-0001" in proc.stdout and "pixel" in proc.stdout, proc.stdout
        return
    if args[0] == "-m":
        spec = importlib.util.find_spec(args[1])
        assert spec is not None and spec.origin, f"{doc}: no module {args[1]}"
        source, options = Path(spec.origin).read_text(), args[2:]
    else:
        script = REPO / args[0]
        assert script.is_file(), f"{doc}: no script {args[0]}"
        source, options = script.read_text(), args[1:]
    for option in options:
        if option.startswith("--"):
            assert f'"{option.split("=")[0]}"' in source, f"{doc}: {args[0]} takes no {option}"


TOOLS = _runnable(["uv", "run"])


def test_the_tools_and_scripts_the_docs_run_are_there() -> None:
    tools = {args[0] for _, args in TOOLS if args[0] not in {"snakemake", "atlas", "python"}}
    assert tools >= {"pytest", "ruff", "mypy", "snakefmt"}, tools
    for tool in tools:
        assert (BIN / tool).is_file(), f"{tool} is not installed in the environment"
    scripts = [args[0] for _, args in _runnable(["bash"])]
    assert scripts, "the docs run no bash script"
    for script in scripts:
        assert (REPO / script).is_file(), script


def test_the_quality_table_of_benchmarks_md_is_the_one_run_report_wrote() -> None:
    text = (REPO / "docs" / "benchmarks.md").read_text()
    quoted = re.search(r"<!-- quality.md -->\n(.*?)<!-- /quality.md -->", text, re.S)
    assert quoted, "docs/benchmarks.md lost its quality.md block"
    assert quoted.group(1) == (REPO / "docs" / "img" / "quality.md").read_text()
