# Stage 1 (only with the pretrained method): the autoencoder's training set, from the configured
# image source (`atlas extract`; bundled photos need no dataset and no network).


rule extract:
    output:
        images=f"{run_dir()}/dataset/images.npy",
        manifest=f"{run_dir()}/dataset/manifest.parquet",
    log:
        f"{run_dir()}/logs/extract.log",
    benchmark:
        f"{run_dir()}/benchmarks/extract.tsv"
    priority: 1  # the start of the longest chain of jobs (autoencoder.smk)
    conda:
        "../envs/atlas.yaml"
    params:
        args=extract_args(),
        out=folder_of,
    shell:
        "atlas extract {params.args} --out {params.out} > {log} 2>&1"
