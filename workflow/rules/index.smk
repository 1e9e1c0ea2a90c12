# Stage 6: results/<run>/index.parquet (`atlas index`), one row per image: the records, every
# chunk's scores and the exemplars joined, checked against atlas.schema, with the run's provenance
# (the resolved config and its sha256, versions, git commit, weights' sha256) in its metadata.


rule index:
    input:
        **index_inputs(),
    output:
        index=f"{run_dir()}/index.parquet",
    log:
        f"{run_dir()}/logs/index.log",
    benchmark:
        f"{run_dir()}/benchmarks/index.tsv"
    conda:
        "../envs/atlas.yaml"
    params:
        run_dir=folder_of,
        exemplars=exemplars_arg,
        config=config_json(),
    shell:
        "atlas index --run-dir {params.run_dir} --records {input.records} {params.exemplars} "
        "--config-json {params.config} --out {output.index} {input.scores} > {log} 2>&1"
