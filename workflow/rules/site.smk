# Stage 6: the static HTML atlas, results/<run>/site/ (`atlas site`), rendered from the run's index:
# a self-contained folder (images, thumbnails, pages, the index for download) to open from disk
# or publish as it is.


rule site:
    input:
        index=f"{run_dir()}/index.parquet",
    output:
        site=directory(f"{run_dir()}/site"),
    log:
        f"{run_dir()}/logs/site.log",
    benchmark:
        f"{run_dir()}/benchmarks/site.tsv"
    conda:
        "../envs/atlas.yaml"
    shell:
        "atlas site --index {input.index} --out {output.site} > {log} 2>&1"
