# Stage 3: the generation jobs, one per (method, target kind, chunk); each optimises its chunk of
# targets as one batch with `atlas generate` into its own folder (PNGs, records.parquet, run.json).
#
# One job per chunk, each declared on its own (the loop below): snakemake has no optional outputs
# and a wildcard rule cannot declare a per-chunk list of files, and declaring the images a chunk's
# records promise as outputs of that chunk's job (while one is missing: chunk_images in
# common.smk) is what makes deleting one image rerun its chunk alone. records.parquet is flagged
# update(): snakemake keeps it while the chunk reruns, so `atlas generate` recognises the folder
# as its own and replaces it whole (with the PNGs of targets that moved to another chunk), and
# snakemake restores it if the rerun fails.
#
# Only the chunk's own method's settings are in its params, so the params rerun trigger reruns
# exactly the jobs of a method whose settings changed. A target whose loss goes NaN is recorded
# as failed (--on-nan record) instead of failing its whole chunk, and the next run tries it again
# with a new seed (--attempt, from chunk_attempts in common.smk) up to nan_attempts times.

for chunk in planned_chunks():

    rule:
        name:
            chunk_job_name(chunk)
        input:
            **chunk_inputs(chunk),
        output:
            *chunk_images(chunk),
            records=update(chunk_records(chunk)),
            run=f"{chunk_dir(chunk)}/run.json",
        log:
            chunk_log(chunk, "logs"),
        benchmark:
            chunk_log(chunk, "benchmarks")
        conda:
            "../envs/atlas.yaml"
        # One thread: measured on this 2-core machine, one 2-thread job took 5x longer than a
        # 1-thread one as soon as anything else ran (OpenMP oversubscription), while two 1-thread
        # jobs side by side took 1.5x one. With a GPU the thread count hardly matters.
        threads: 1
        # Time and memory per method from the config (generate_resources, methods.<m>.resources):
        # a profile's set-resources names rules, and each chunk is a rule of its own.
        resources:
            **generate_resources(chunk.method),
            gpu=1,
        params:
            method=chunk.method,
            method_args=method_args(chunk.method),
            classifier=classifier_args(),
            targets=chunk_target_args(chunk),
            attempts=attempt_args(chunk),
            batch_size=batch_size(chunk),
            seed=config["seed"],
            compute=compute_args(),
            inputs=method_input_args,
            out=folder_of,
        shell:
            "OMP_NUM_THREADS={threads} atlas generate --method {params.method} {params.method_args} "
            "{params.classifier} {params.targets} {params.attempts} {params.inputs} --seed {params.seed} "
            "--batch-size {params.batch_size} {params.compute} --on-nan record --device auto --out {params.out} > {log} 2>&1"
