import os

from atlas import allocator
from tests.slurm_cluster import _slurm_turn, slurm_cluster, slurm_cluster_alone  # noqa: F401

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per pytest-xdist worker (there is a worker per core), for torch here and for what
    # the tests start (`atlas` commands, snakemake's jobs), so that the workers do not oversubscribe
    # the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

# As `atlas` sets it: the tests that optimise in this process run as the commands do.
allocator.tune()
