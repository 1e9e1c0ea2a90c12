# Two models side by side (config `compare:`): the same targets drawn for a second classifier B.
# B's run is this workflow again, as a module whose config is this one with B as the classifier
# and a run folder of its own (results/<compare.run>/: its images, index and site, every rule
# renamed compare_<rule>), so a rerun redoes only what is missing on either side. Then one job
# reads each model's images with the other model (`atlas compare`), and the site of run A shows
# both models' images side by side (`atlas site --compare`).


if compare_on():

    module second_model:
        snakefile:
            "../../Snakefile"
        config:
            compare_config()

    use rule * from second_model exclude all as compare_*

    use rule all from second_model as compare_all with:
        default_target: False

    localrules:
        compare_collect,
        compare_index,
        compare_site,

    rule compare:
        input:
            **weights_inputs(),
            **other_weights_inputs(),
            index=f"{run_dir()}/index.parquet",
            other=f"results/{compare_run()}/index.parquet",
        output:
            compare=compare_file(),
        log:
            f"{run_dir()}/logs/compare.log",
        benchmark:
            f"{run_dir()}/benchmarks/compare.tsv"
        conda:
            "../envs/atlas.yaml"
        threads: 1
        resources:
            gpu=1,
        params:
            classifier=classifier_args(),
            other=other_classifier_args(),
            labels=lambda wildcards: _flags(zip(("label", "other-label"), compare_labels())),
            seed=config["seed"],
        shell:
            "OMP_NUM_THREADS={threads} atlas compare --index {input.index} --other-index {input.other} "
            "{params.classifier} {params.other} {params.labels} --seed {params.seed} --device auto "
            "--out {output.compare} > {log} 2>&1"
