# Stage 4: one table for the run, results/<run>/records.parquet (one row per target and method,
# image paths relative to results/<run>/), merged from every chunk's records by `atlas collect`.


rule collect:
    input:
        records=all_chunk_records(),
    output:
        records=f"{run_dir()}/records.parquet",
    log:
        f"{run_dir()}/logs/collect.log",
    benchmark:
        f"{run_dir()}/benchmarks/collect.tsv"
    conda:
        "../envs/atlas.yaml"
    params:
        run_dir=folder_of,
    shell:
        "atlas collect --run-dir {params.run_dir} --out {output.records} {input.records} > {log} 2>&1"
