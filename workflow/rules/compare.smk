# Two models side by side (config `compare:`): the same targets drawn for a second classifier B.
# B's run is this workflow again, as a module whose config is this one with B as the classifier
# and a run folder of its own (results/<compare.run>/: its images, index and site, every rule
# renamed compare_<rule>), so a rerun redoes only what is missing on either side. Then one job
# reads each model's images with the other model (`atlas compare`), and the site of run A shows
# both models' images side by side (`atlas site --compare`).


def compare_on():
    return bool(config.get("compare"))


def compare_run():
    """Run B's name: `compare.run`, else <run>-compare."""
    return config["compare"].get("run") or f"{config['run']}-compare"


def compare_config():
    """The config of run B: this one with B as the classifier, its own run name, no comparison."""
    b = copy.deepcopy(config)
    other = b.pop("compare")
    b["compare"] = None
    b["classifier"] = other["classifier"]
    b["run"] = compare_run()
    return b


def compare_labels():
    """How the site names the two models: `compare.labels`, else each classifier's name."""
    a, b = config["compare"].get("labels") or [None, None]
    a = a or config["classifier"]["name"]
    b = b or config["compare"]["classifier"]["name"]
    if a == b:  # e.g. a fine-tuned checkpoint against its base, both of one architecture
        a, b = f"{a} (A)", f"{b} (B)"
    return a, b


def compare_file():
    return f"{run_dir()}/compare/compare.parquet"


def compare_spec():
    """The second model B, as `compare.classifier` names it."""
    return ClassifierSpec.from_config(config["compare"]["classifier"], "compare.classifier")


def other_classifier_args():
    return _flags(compare_spec().flags("other-"))


def other_weights_inputs():
    """B's local files (weights, a saved model, a classes file): a changed one reruns the comparison."""
    return {f"other_file_{i}": path for i, path in enumerate(compare_spec().files())}


def compare_outputs():
    """What `all` asks for with `compare:`: run B's own final outputs and the comparison."""
    if not compare_on():
        return []
    return [*rules.compare_all.input, compare_file()]


def check_compare():
    if not compare_on():
        return
    if compare_run() == config["run"]:
        fail(f"compare.run {compare_run()!r} is this run's own name; give the second model's run another name")
    a, b = classifier_spec(), compare_spec()
    if a == b:
        fail("compare.classifier is the classifier itself: name a second model (another name or weights file)")
    try:
        b.check("compare.classifier")
        same = a.class_names() == b.class_names()
    except AtlasError as exc:
        fail(str(exc))
    if not same:
        fail(
            "compare.classifier has another label set than classifier (classes): two models are compared "
            "on the same classes; give both the same classes file"
        )


check_compare()


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
