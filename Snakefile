# Atlas: a classifier's preferred input for every class, chosen filters and class pairs
# (Despraz et al. 2017), as a batch workflow (docs/design.md: the stages, the chunks, reruns):
#
#   extract -> train_dae --+                                  (only with the pretrained method)
#                          +-> generate_<method>_<kind>_<k> (one job per chunk) -> collect --+
#                                 +-> score (one job per method) ---------------------------+-> index -> site
#   extract -> exemplars (when exemplars.top_k > 0) ----------------------------------------+
#
#   snakemake --cores all                    # the embedded default (config.yaml), on one machine
#   snakemake --cores all --profile slurm    # on a SLURM cluster; generation asks for a GPU
#   snakemake --cores all --configfile workflow/configs/imagenet-vgg16.yaml   # the paper's run

from snakemake.utils import min_version

from atlas import cluster

min_version("9.0")

# What the head does when the cluster fails (atlas.cluster, docs/operations.md): the SLURM
# executor's status checks and submissions made to end, one line per failed job, and a hint for
# a lock that a killed run left.
cluster.install(workflow)  # once: the second model's copy of this file (compare.smk) finds it done


configfile: "config.yaml"


include: "workflow/rules/common.smk"


validate_config("workflow/schemas/config.schema.yaml")
check_config()


include: "workflow/rules/dataset.smk"
include: "workflow/rules/autoencoder.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/index.smk"
include: "workflow/rules/site.smk"
include: "workflow/rules/compare.smk"


# When the run starts: SIGTERM stops it as Ctrl-C does (its jobs are cancelled), and jobs of an
# earlier run of this folder that still run are named.
onstart:
    cluster.on_start(workflow)


# When it ends with failed jobs: each on one line (rule, chunk, SLURM state, reason, log) and
# the command that redoes them.
onerror:
    cluster.on_error(workflow)


localrules:
    all,
    collect,
    index,
    site,


# The run's final outputs: the merged records, the index and the site (results/<run>/).
rule all:
    default_target: True
    input:
        records=f"{run_dir()}/records.parquet",
        index=f"{run_dir()}/index.parquet",
        # A job reruns for a missing output only if something requests it: requested here, a
        # deleted image reruns the chunk that wrote it (see chunk_images in common.smk), and a
        # chunk whose records or run.json are gone (a job that failed after its process had
        # published the chunk) reruns, though the run's records and index are newer.
        images=all_chunk_images(),
        chunks=all_chunk_records(),
        runs=all_chunk_runs(),
        site=f"{run_dir()}/site",
        # With `compare:`, the second model's run (its own images, index and site) and the two
        # read across (compare.smk).
        compare=compare_outputs(),
