# Stage 6: the static HTML atlas, results/<run>/site/ (`atlas site`), rendered from the run's index:
# a self-contained folder (images, thumbnails, pages, the index for download) to open from disk
# or publish as it is. With `compare:` it also shows the second model's images beside this run's
# and the two models' readings of each other's images (compare.smk).


rule site:
    input:
        unpack(lambda wildcards: site_compare_inputs()),
        index=f"{run_dir()}/index.parquet",
    output:
        site=directory(f"{run_dir()}/site"),
    log:
        f"{run_dir()}/logs/site.log",
    benchmark:
        f"{run_dir()}/benchmarks/site.tsv"
    conda:
        "../envs/atlas.yaml"
    params:
        compare=lambda wildcards, input: f"--compare {input.compare}" if "compare" in input.keys() else "",
    shell:
        "atlas site --index {input.index} {params.compare} --out {output.site} > {log} 2>&1"
