# Stage 5: the scores of every generated image (`atlas score`, one job per generation chunk, so
# scoring fans out as generation does and asks for a GPU too): D's top-5 names, the judge
# classifier's view of the target (transferability), and D's score under small shifts, zooms and a
# flip (robustness). And the exemplars (`atlas exemplars`, one job per run): the dataset images D
# scores highest for each class and pair target, from one batched pass of D over the dataset.


rule score:
    input:
        **weights_inputs(),
        records=f"{run_dir()}/generate/{{method}}/{{kind}}/{{chunk}}/records.parquet",
        run=f"{run_dir()}/generate/{{method}}/{{kind}}/{{chunk}}/run.json",
    output:
        scores=f"{run_dir()}/scores/{{method}}/{{kind}}/{{chunk}}.parquet",
    log:
        f"{run_dir()}/logs/score/{{method}}/{{kind}}/{{chunk}}.log",
    benchmark:
        f"{run_dir()}/benchmarks/score/{{method}}/{{kind}}/{{chunk}}.tsv"
    wildcard_constraints:
        method="|".join(METHODS),
        kind="class|filter|pair",
        chunk=r"chunk-\d{4}",
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
        chunk=folder_of_input,
    shell:
        "OMP_NUM_THREADS={threads} atlas score --chunk {params.chunk} {params.classifier} {params.judge} "
        "{params.robustness} --seed {params.seed} --device auto --out {output.scores} > {log} 2>&1"


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
        data=folder_of_input,
        out=folder_of,
    shell:
        "OMP_NUM_THREADS={threads} atlas exemplars --data {params.data} {params.classifier} {params.targets} "
        "--top-k {params.top_k} --seed {params.seed} --device auto --out {params.out} > {log} 2>&1"
