# Stage 2 (only with the pretrained method): the denoising autoencoder whose decoder becomes the
# pretrained method's G (`atlas train-dae`). Its checkpoint.pt is deliberately not an output:
# snakemake would delete it before a rerun, and it is what lets an interrupted training resume.


rule train_dae:
    input:
        images=f"{run_dir()}/dataset/images.npy",
        manifest=f"{run_dir()}/dataset/manifest.parquet",
    output:
        decoder=autoencoder_file("decoder.pt"),
        losses=autoencoder_file("losses.parquet"),
        losses_plot=autoencoder_file("losses.png"),
        reconstructions=autoencoder_file("reconstructions.png"),
        info=autoencoder_file("train.json"),
    log:
        f"{run_dir()}/logs/train_dae.log",
    benchmark:
        f"{run_dir()}/benchmarks/train_dae.tsv"
    # The longest chain of jobs (extract, train_dae, the pretrained method's chunks) starts first,
    # so that the pretrained chunks do not run alone at the end.
    priority: 1
    conda:
        "../envs/atlas.yaml"
    threads: 1  # as the generation jobs (generate.smk), which run beside it
    resources:
        gpu=1,
    params:
        args=train_args(),
        data=folder_of_input,
        out=folder_of,
    shell:
        "OMP_NUM_THREADS={threads} atlas train-dae --data {params.data} --out {params.out} {params.args} "
        "--device auto > {log} 2>&1"
