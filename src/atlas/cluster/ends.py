"""Why a job failed, in one line: the rule, the chunk folder, the SLURM job, its state and the
reason, and the job's logs (`JobEnd.line`). The reason comes from the SLURM state (`sacct`), or
for a job that failed on its own from its log: atlas's last message, or that there was none (a
process killed by SIGKILL, as the out-of-memory killer does, says nothing)."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from dataclasses import dataclass
from typing import Any

_ATLAS_LAST_LINE = re.compile(r"^atlas [a-z-]+: (error: |interrupted|terminated)")


@dataclass
class JobEnd:
    """How one job ended badly, as the head learned it."""

    rule: str
    chunk: str | None  # a generation job's chunk folder
    slurm_id: str | None
    state: str  # the SLURM state (CANCELLED, TIMEOUT, ...), "sbatch failed", or "failed" (local)
    reason: str
    log: str | None  # the job's own log (atlas's output)
    slurm_log: str | None

    def why(self) -> str:
        """The SLURM job, its state and the reason: what Snakemake's own paragraph on the failed job
        shows as its message, in place of the plugin's "Reason: Unknown"."""
        job = f"SLURM job {self.slurm_id} " if self.slurm_id else ""
        return f"{job}{self.state}: {self.reason}"

    def line(self) -> str:
        where = f" (chunk {self.chunk})" if self.chunk else ""
        logs = ", ".join(p for p in (self.log, self.slurm_log) if p)
        return f"{self.rule}{where}: {self.why()}" + (f"; log {logs}" if logs else "")


ENDS: dict[int, JobEnd] = {}  # Snakemake job id -> how its last attempt ended


def sbatch_error(msg: str) -> str:
    m = re.search(r"The error message was '([^']*)'", msg)
    text = m.group(1) if m else msg
    return " ".join(text.split())[:200]


def _sacct_row(slurm_id: str) -> dict[str, str]:
    fields = ["State", "ExitCode", "Timelimit", "ReqMem", "NodeList"]
    try:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", slurm_id, "-o", ",".join(fields)],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    lines = [line for line in out.splitlines() if line.strip()]
    return dict(zip(fields, lines[0].split("|"), strict=False)) if lines else {}


def _user(uid: str) -> str:
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ValueError):
        return f"uid {uid}"


def log_reason(path: str | None) -> str:
    """What a job's own log says about its end: atlas's last message, or that there is none."""
    if not path or not os.path.isfile(path):
        return "its log was not written: it failed before its command started (see the SLURM log)"
    with open(path, "rb") as fh:
        fh.seek(max(0, os.path.getsize(path) - 4096))
        lines = [line.strip() for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if _ATLAS_LAST_LINE.match(last):
        return last
    ends = f"; its log ends: {last[:160]}" if last else "; its log is empty"
    return (
        "the command ended without a message: killed (SIGKILL: the out-of-memory killer or kill -9) or crashed" + ends
    )


def state_reason(state: str, row: dict[str, str], job_log: str | None, method: str | None) -> str:
    """One clause on why a job in this SLURM state ended; `row` is its sacct row."""
    key = f"methods.{method}.resources" if method else "resources"
    if state == "CANCELLED":
        m = re.search(r"by (\d+)", row.get("State", ""))
        who = f" by {_user(m.group(1))}" if m else ""
        return f"cancelled{who} (scancel, an administrator, or preemption)"
    if state == "TIMEOUT":
        limit = row.get("Timelimit") or "its limit"
        return f"reached its time limit ({limit}); raise runtime ({key}.runtime, minutes)"
    if state == "OUT_OF_MEMORY":
        mem = row.get("ReqMem") or "its memory"
        return f"ran out of its memory ({mem}); raise mem_mb ({key}.mem_mb)"
    if state == "NODE_FAIL":
        return f"its node {row.get('NodeList', '')} failed".replace("  ", " ")
    if state == "PREEMPTED":
        return "preempted by a job of higher priority and not requeued"
    if state in ("BOOT_FAIL", "DEADLINE"):
        return {"BOOT_FAIL": "its node failed to boot", "DEADLINE": "it reached its deadline"}[state]
    return log_reason(job_log)


def _chunk_folder(job: Any) -> str | None:
    if not str(job.name).startswith("generate_"):
        return None
    for path in job.output:
        if str(path).endswith("/records.parquet"):
            return os.path.dirname(str(path))
    return None


def _method(job: Any) -> str | None:
    m = re.match(r"generate_([a-z]+)_", str(job.name))
    return m.group(1) if m else None


def _job_log(job: Any) -> str | None:
    logs = [str(p) for p in job.log] if job.log else []
    return logs[0] if logs else None


def slurm_end(job_info: Any, msg: str | None, raw_state: str | None = None) -> JobEnd:
    """A SLURM job's end from what the plugin reports (`msg`), `sacct` says, and the state the
    last poll read (`raw_state`, when sacct has no row)."""
    job = job_info.job
    slurm_id = job_info.external_jobid
    aux = job_info.aux or {}
    slurm_log = str(aux["slurm_logfile"]) if aux.get("slurm_logfile") else None
    if slurm_id is None:
        reason = sbatch_error(msg or "") or "sbatch failed"
        return JobEnd(str(job.name), _chunk_folder(job), None, "sbatch failed", reason, _job_log(job), None)
    row = _sacct_row(str(slurm_id))
    raw = (row.get("State") or raw_state or "").strip()
    state = raw.split()[0] if raw else ""
    if not state:
        m = re.search(r"SLURM status is: '([A-Z_]+)'", msg or "")
        state = m.group(1) if m else "FAILED"
    reason = state_reason(state, row, _job_log(job), _method(job))
    exit_code = row.get("ExitCode", "")
    if state == "FAILED" and exit_code and exit_code not in ("0:0", "1:0"):
        reason += f" (exit code {exit_code})"
    return JobEnd(str(job.name), _chunk_folder(job), str(slurm_id), state, reason, _job_log(job), slurm_log)


def local_end(job: Any) -> JobEnd:
    return JobEnd(str(job.name), _chunk_folder(job), None, "failed", log_reason(_job_log(job)), _job_log(job), None)
