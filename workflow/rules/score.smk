# Stage 5: the scores of every generated image (`atlas score`, one job per method, asking for a
# GPU as generation does): D's top-5 names, the judge classifier's view of the target
# (transferability), and D's score under small shifts, zooms and a flip (robustness). And the
# exemplars (`atlas exemplars`, one job per run): the dataset images D scores highest for each
# class and pair target, from one batched pass of D over the dataset.


# One scoring job per method, not per chunk: it loads D and the judge once for all the method's
# chunks (a job's start-up, loading both, cost as much as scoring a small chunk). The scores files
# are update() outputs and `atlas score` keeps a file already made from the same records, D, judge
# and robustness set, so a rerun of one chunk rescores that chunk alone.
for method in enabled_methods():

    rule:
        name:
            f"score_{method}"
        input:
            **weights_inputs(),
            records=[chunk_records(c) for c in method_chunks(method)],
            runs=[f"{chunk_dir(c)}/run.json" for c in method_chunks(method)],
        output:
            [update(chunk_scores(c)) for c in method_chunks(method)],
        log:
            f"{run_dir()}/logs/score/{method}.log",
        benchmark:
            f"{run_dir()}/benchmarks/score/{method}.tsv"
        conda:
            "../envs/atlas.yaml"
        threads: 1  # as the generation jobs, which run beside it
        resources:
            gpu=1,
        params:
            classifier=classifier_args(),
            judge=judge_args(),
            robustness=robustness_args(),
            seed=config["seed"],
            chunks=score_chunk_args(method),
        shell:
            "OMP_NUM_THREADS={threads} atlas score {params.chunks} {params.classifier} {params.judge} "
            "{params.robustness} --seed {params.seed} --device auto > {log} 2>&1"


rule exemplars:
    input:
        **weights_inputs(),
        images=f"{run_dir()}/dataset/images.npy",
        manifest=f"{run_dir()}/dataset/manifest.parquet",
    output:
        exemplars=f"{run_dir()}/exemplars/exemplars.parquet",
    log:
        f"{run_dir()}/logs/exemplars.log",
    benchmark:
        f"{run_dir()}/benchmarks/exemplars.tsv"
    conda:
        "../envs/atlas.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        classifier=classifier_args(),
        targets=exemplar_target_args(),
        top_k=config["exemplars"]["top_k"],
        seed=config["seed"],
        data=dataset_folder,
        out=folder_of,
    shell:
        "OMP_NUM_THREADS={threads} atlas exemplars --data {params.data} {params.classifier} {params.targets} "
        "--top-k {params.top_k} --seed {params.seed} --device auto --out {params.out} > {log} 2>&1"
