from tests.slurm_cluster import slurm_cluster  # noqa: F401
