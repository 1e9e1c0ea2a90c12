"""How a run ends when the cluster fails: what the workflow's head (the Snakemake process that
submits the jobs) does about cancelled, killed and timed-out jobs, a controller or accounting
database that does not answer, SIGTERM, and a lock left behind by a killed head.

The Snakefile calls `install` while it is read (in the head only), `on_start` when the run
starts and `on_error` when it ends with failed jobs; `lock_hint` explains a stale lock (module
`head`). Nothing here runs inside a job. docs/operations.md describes each fault as the user sees
it. Modules: `head` (the Snakefile's hooks), `slurm` (the plugin's methods wrapped), `ends` (why
a job failed, on one line).

Under `--profile slurm` the SLURM executor plugin (snakemake-executor-plugin-slurm 2.8.0) submits
and watches the jobs. `install` wraps its status query and some of its methods; each wrapper
keeps the plugin's own behaviour where that is right and is harmless where a later version
already does what it adds:

- a job's state as `sacct` prints it is cut to its first word: a cancelled job is `CANCELLED by
  <uid>`, which the plugin does not recognise as an end, so the head waited for it forever;
- a job still `PREEMPTED` at the next poll is over (SLURM requeues a job it will run again as
  PENDING): the plugin waited for it forever too;
- status polls: the plugin starts them `slurm-init-seconds-before-status-checks` apart, adds 10 s
  after each poll that saw no job end and goes up to 180 s; here they are at most
  `slurm.STATUS_POLL_MAX_S` apart, which bounds how late a job's end is seen. Between polls the head
  checks every second whether it is stopping, instead of sleeping out the interval;
- a poll whose every `sacct` attempt failed (the accounting database restarting) made the plugin
  forget the jobs it asked about, and the head waited for them forever: they are kept and asked
  about at the next poll;
- an `sbatch` that fails because the controller does not answer (restarting, overloaded) failed
  the job at once, spending its retry: it is tried again after `slurm.SUBMIT_WAITS_S` before it counts.

Each job that fails is reported on one line (`JobEnd.line`): the rule, the chunk folder, the SLURM
job, its state and the reason, and the job's log; Snakemake's own paragraph on the job that
follows gets the state and the reason as its message (`JobEnd.why`, where the plugin wrote
"Reason: Unknown"); the end of the run lists them again with the command that redoes them
(`on_error`).
"""

from atlas.cluster.head import install, lock_hint, on_error, on_start

__all__ = ["install", "lock_hint", "on_error", "on_start"]
