# Helpers of the Atlas workflow: the config checks the schema cannot express, the chunk plan, and
# the paths and arguments of every job. Evaluated for every snakemake invocation (and in every
# cluster job), so nothing here imports torch or loads a classifier: class indices are checked
# against D's label set (its classes file, or ImageNet-1k's 1000 classes: `atlas.classifier_spec`),
# layer names and channel counts against the table of the built-in classifiers' layers that the
# package ships (`atlas.layer_table`); a classifier not in that table has its filters checked by
# `atlas generate` when it loads the model.

import copy
import hashlib
import json
import os
import shlex

import pyarrow.parquet as pq
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from atlas.classifier_spec import NONE, SAVED, ClassifierSpec
from atlas.errors import AtlasError
from atlas.layer_table import check_filter
from atlas.methods import INPUTS, schema_methods, settings_for
from atlas.methods import get as get_method
from atlas.methods import names as method_names
from atlas.plan import KINDS, class_targets, filter_targets, pair_targets, plan_chunks, target_specs


def run_dir():
    """Everything a run writes goes under results/<run>/."""
    return f"results/{config['run']}"


def fail(message):
    """Stop before any job runs, with a one-line message."""
    raise WorkflowError(f"config: {message}")


def validate_config(schema):
    """`snakemake.utils.validate` (which also fills in the defaults), its error cut to one line.
    The schema's `methods` gets an entry for every registered method it does not describe itself
    (`atlas.methods.schema_methods`), so that a method is its module alone."""
    import tempfile

    import yaml
    from jsonschema import ValidationError

    check_renamed_keys()
    with open(os.path.join(workflow.basedir, schema), encoding="utf-8") as fh:
        loaded = yaml.safe_load(fh)
    try:
        full = schema_methods(loaded)
    except AtlasError as exc:
        fail(str(exc))
    used = schema
    if full != loaded:
        with tempfile.NamedTemporaryFile("w", suffix=".schema.json", delete=False) as fh:
            json.dump(full, fh)
        used = fh.name
    try:
        validate(config, used)
    except WorkflowError as exc:
        cause = exc.__context__  # validate() raises its WorkflowError while handling this
        if not isinstance(cause, ValidationError):
            raise
        where = ".".join(str(p) for p in cause.absolute_path) or "top level"
        fail(f"{where}: {cause.message} (schema {schema})")
    finally:
        if used != schema:
            os.unlink(used)


# Keys of a method's config entry that were renamed: old -> new.
RENAMED_METHOD_KEYS = {"chunk_size": "classes_per_job"}


def check_renamed_keys():
    """A config written for an earlier version: a renamed key is a one-line error naming the new one."""
    for method, entry in (config.get("methods") or {}).items():
        if not isinstance(entry, dict):
            continue
        for old, new in RENAMED_METHOD_KEYS.items():
            if old in entry:
                fail(
                    f"methods.{method}.{old} was renamed methods.{method}.{new} (the bin of target indices per "
                    f"generation job); write {new}: {entry[old]}"
                )


def enabled_methods():
    return [m for m in method_names() if config["methods"][m]["enabled"]]


def enabled_inputs():
    """The inputs (atlas.methods.INPUTS) that the enabled methods take from the workflow."""
    return {name for m in enabled_methods() for name in get_method(m).inputs}


def method_overrides(method):
    """The method's non-null settings, as the text `--set` takes (sorted: stable params)."""
    out = {}
    for key, value in sorted(config["methods"][method]["settings"].items()):
        if value is not None:
            out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def classifier_spec():
    """D, as the config names it (`atlas.classifier_spec`)."""
    return ClassifierSpec.from_config(config["classifier"], "classifier")


def judge_spec():
    """The judge, or None for judge.name none."""
    return None if config["judge"]["name"] == NONE else ClassifierSpec.from_config(config["judge"], "judge")


_num_classes = {}


def num_classes():
    """The size of D's label set (read once: planning asks for it per target list)."""
    if "n" not in _num_classes:
        _num_classes["n"] = classifier_spec().num_classes
    return _num_classes["n"]


def planned_targets(kind, method=None):
    """The targets of `kind` that `method` draws (None: every enabled method's, together)."""
    n = num_classes()
    if kind == "class":
        if method is not None and config["methods"][method]["classes"] is not None:
            return class_targets(config["methods"][method]["classes"], f"methods.{method}.classes", n)
        if method is None:
            listed = list(config["classes"])
            for m in enabled_methods():
                listed += config["methods"][m]["classes"] or []
            return class_targets(listed, num_classes=n)
        return class_targets(config["classes"], num_classes=n)
    if kind == "pair":
        return pair_targets(config["pairs"], n)
    return filter_targets(config["filters"])


def check_models():
    """D's and the judge's specs: names, the inputs a user's model must declare, the label set,
    and a judge that can judge D's classes; raises AtlasError."""
    d = classifier_spec()
    d.check("classifier")
    judge = judge_spec()
    if judge is not None:
        judge.check("judge")
        if judge.class_names() != d.class_names():
            raise AtlasError(
                f"judge: {judge.name} classifies {judge.classes or 'ImageNet-1k'}'s {judge.num_classes} classes, "
                f"D {d.classes or 'ImageNet-1k'}'s {d.num_classes}: set judge.name to none (no judge), or to a "
                "judge trained on D's classes with judge.classes the same file"
            )
    if d.kind in SAVED and config["filters"]:
        raise AtlasError(
            f"filters: {d.name} is a saved {d.kind} model whose layers cannot be hooked; drop the filters, "
            "or name the model as python:<module>:<function> with a state-dict file"
        )
    decoders = [m for m in enabled_methods() if "decoder" in get_method(m).inputs]
    if decoders and (d.kind in ("python", *SAVED) or d.mean or d.std):
        raise AtlasError(
            f"methods.{decoders[0]}: its autoencoder learns D's normalisation from D's name, which "
            f"{d.name} with its own mean/std does not give; disable the {decoders[0]} method for this classifier"
        )


def check_config():
    """Everything the schema cannot say, checked before any job runs."""
    try:
        check_models()
        for method in enabled_methods():
            planned_targets("class", method)  # each method's own class list, named in its errors
        targets = {kind: planned_targets(kind) for kind in KINDS}
        for t in targets["filter"]:
            check_filter(config["classifier"]["name"], t.layer, [t.channel])
        for method in enabled_methods():
            settings_for(method, config["methods"][method]["preset"], method_overrides(method))
    except AtlasError as exc:
        fail(str(exc))
    if not enabled_methods():
        fail("methods: every method is disabled; enable at least one of " + ", ".join(method_names()))
    if not any(targets.values()):
        fail("no targets: list some classes, pairs or filters")
    for section, weights in local_weights().items():
        if not os.path.isfile(weights):
            fail(f"{section}.weights: {weights} is neither default, random nor an existing file")
    for key, path in model_files().items():
        if not os.path.isfile(path):
            fail(f"{key.split('_', 1)[0]}: the model file {path} does not exist; give an existing file")
    if enabled_inputs() or exemplars_on():  # every method input is made from the dataset's photos
        check_dataset(config["dataset"])
    check_set_resources()
    check_compare()


def check_set_resources():
    """`--set-resources RULE:...` for a rule that does not exist is ignored by snakemake; the
    generation jobs' names are one per chunk, so refuse the names a user would try for them."""
    chunk_rules = {chunk_job_name(c) for c in planned_chunks()}
    for name in workflow.resource_settings.overwrite_resources or {}:
        if name in ("generate", "score") or (name.startswith("generate_") and name not in chunk_rules):
            raise WorkflowError(
                f"--set-resources {name}:... names no rule of this run (each chunk is a rule of its own, "
                "generate_<method>_<kind>_<k>); set generate_resources or methods.<method>.resources in the config"
                + ("; the score jobs are score_<method>" if name == "score" else "")
            )


def generate_resources(method):
    """The SLURM resources of `method`'s generation jobs from the config (generate_resources, then
    methods.<method>.resources key by key); runtime and mem_mb are the first attempt's, a retry
    asks for attempt x them (as the profile's defaults)."""
    merged = {**config["generate_resources"], **config["methods"][method]["resources"]}
    out = {}
    for key, value in merged.items():
        if key in ("runtime", "mem_mb"):
            out[key] = lambda wildcards, attempt, value=value: value * attempt
        else:
            out[key] = value
    return out


def exemplars_on():
    """Exemplars are drawn for every target unless exemplars.top_k is 0."""
    return config["exemplars"]["top_k"] > 0 and any(planned_targets(kind) for kind in KINDS)


def check_dataset(dataset):
    source, root = dataset["source"], dataset["root"]
    if source == "bundled":
        if root is not None:
            fail("dataset.root is for source folder or imagenet; drop it for bundled")
    elif root is None:
        fail(f"dataset.root is needed for dataset.source {source}: the folder that holds the images")
    elif not os.path.isdir(root):
        fail(f"dataset.root {root} is not an existing folder (dataset.source {source})")
    if dataset["classes"] is not None and source != "imagenet":
        fail("dataset.classes selects ImageNet classes: use it with dataset.source imagenet")


# --------------------------------------------------------------------------------------------
# The chunk plan


def planned_chunks():
    """Every generation job: enabled method x target kind x chunk of the method's classes_per_job."""
    chunks = []
    for method in enabled_methods():
        size = config["methods"][method]["classes_per_job"]
        for kind in KINDS:
            seeds = config["methods"][method]["seeds"]
            chunks.extend(plan_chunks(method, kind, planned_targets(kind, method), size, seeds))
    return chunks


def batch_size(chunk):
    """Targets `atlas generate` optimises at once: the method's batch_size, at most the chunk."""
    size = config["methods"][chunk.method]["batch_size"]
    return chunk.size if size is None else min(size, chunk.size)


def method_chunks(method):
    return [c for c in planned_chunks() if c.method == method]


def score_chunk_args(method):
    """`--chunk DIR --out FILE` for each of the method's chunks."""
    return " ".join(
        f"--chunk {shlex.quote(chunk_dir(c))} --out {shlex.quote(chunk_scores(c))}" for c in method_chunks(method)
    )


def chunk_dir(chunk):
    return f"{run_dir()}/generate/{chunk.method}/{chunk.kind}/{chunk.name}"


def chunk_log(chunk, folder):
    suffix = "tsv" if folder == "benchmarks" else "log"
    return f"{run_dir()}/{folder}/generate/{chunk.method}/{chunk.kind}/{chunk.name}.{suffix}"


def chunk_records(chunk):
    return f"{chunk_dir(chunk)}/records.parquet"


def chunk_job_name(chunk):
    return f"generate_{chunk.method}_{chunk.kind}_{chunk.key}"


def chunk_images(chunk):
    """The PNGs this chunk's records promise, listed only while one of them is missing.

    Declared as outputs of the chunk's job and requested by `all`, they make deleting one image
    rerun that chunk alone. Only while one is missing: snakemake records provenance (params,
    code, input set) per output file when a job finishes and checks it only for jobs whose every
    output has it, so outputs that were not declared when the job ran would switch those rerun
    triggers off. Only the images the records list: a target whose loss went NaN is recorded as
    failed and has no PNG (snakemake has no optional outputs).
    """
    records = chunk_records(chunk)
    if not os.path.isfile(records):
        return []
    try:
        rows = pq.read_table(records, columns=["target_id", "image", "failed"]).to_pylist()
    except Exception:  # unreadable records promise nothing; `atlas collect` reports them
        return []
    planned = set(chunk.ids)
    images = [
        f"{chunk_dir(chunk)}/{row['image']}"
        for row in rows
        if not row["failed"] and row["target_id"] in planned and row["image"] == f"{row['target_id']}.png"
    ]
    return sorted(images) if not all(os.path.isfile(p) for p in images) else []


def chunk_attempts(chunk):
    """Target id -> the attempt the chunk's job runs it at, for the targets past their first.

    Read from the chunk's records (kept while it reruns): a target that failed (its loss went NaN)
    with attempts left goes to its next attempt; one that is past its first keeps its attempt.
    These are the job's params, so a retry due changes them and reruns the chunk; once the
    records say what the params say (or the attempts are spent) nothing changes and nothing runs.
    """
    records = chunk_records(chunk)
    if not os.path.isfile(records):
        return {}
    try:
        table = pq.read_table(records)
    except Exception:  # unreadable records: the chunk's outputs rerun it anyway
        return {}
    if "attempt" not in table.column_names:
        return {}
    planned = set(chunk.ids)
    out = {}
    for row in table.select(["target_id", "failed", "attempt"]).to_pylist():
        if row["target_id"] not in planned:
            continue
        attempt = int(row["attempt"] or 0)
        if row["failed"] and attempt + 1 < config["nan_attempts"]:
            attempt += 1
        if attempt:
            out[row["target_id"]] = attempt
    return out


def attempt_args(chunk):
    return " ".join(f"--attempt {shlex.quote(f'{t}={k}')}" for t, k in sorted(chunk_attempts(chunk).items()))


# Each method input (atlas.methods.INPUTS): the file the workflow makes it as, and the path
# `atlas generate` is given (the autoencoder's decoder file; the extracted photos' folder).
METHOD_INPUT_FILES = {
    "decoder": (lambda: autoencoder_file("decoder.pt"), lambda path: path),
    "spectrum": (lambda: f"{run_dir()}/dataset/images.npy", os.path.dirname),
}


def chunk_inputs(chunk):
    """The chunk's input files: those its method takes (by input name), D's weights if a file."""
    inputs = {name: METHOD_INPUT_FILES[name][0]() for name in get_method(chunk.method).inputs}
    if "classifier" in local_weights():
        inputs["weights"] = local_weights()["classifier"]
    inputs.update({k: v for k, v in model_files().items() if k.startswith("classifier_")})
    return inputs


def chunk_scores(chunk):
    return f"{run_dir()}/scores/{chunk.method}/{chunk.kind}/{chunk.name}.parquet"


def all_chunk_scores():
    return [chunk_scores(c) for c in planned_chunks()]


def all_chunk_runs():
    return [f"{chunk_dir(c)}/run.json" for c in planned_chunks()]


def all_chunk_records():
    return [chunk_records(c) for c in planned_chunks()]


def all_chunk_images():
    return [png for c in planned_chunks() for png in chunk_images(c)]


# --------------------------------------------------------------------------------------------
# Arguments of the jobs (params): text for the shell, quoted


def _flags(pairs):
    return " ".join(f"--{flag} {shlex.quote(str(value))}" for flag, value in pairs if value is not None)


def classifier_args():
    return _flags(classifier_spec().flags())


def judge_args():
    judge = judge_spec()
    return _flags([("judge", NONE)] if judge is None else judge.flags("judge-"))


def local_weights():
    """D's and the judge's weights that are files (not default or random), by config section."""
    return {
        key: config[key]["weights"]
        for key in ("classifier", "judge")
        if config[key]["weights"] not in ("default", "random") and config[key]["name"] != NONE
    }


def model_files():
    """D's and the judge's other files (a saved model, a classes file), by section and role."""
    out = {}
    specs = {"classifier": classifier_spec(), "judge": judge_spec()}
    for section, spec in specs.items():
        if spec is None:
            continue
        if spec.kind in SAVED:
            out[f"{section}_model"] = spec.name.split(":", 1)[1]
        if spec.classes is not None:
            out[f"{section}_classes"] = spec.classes
    return out


def weights_inputs():
    """Local weight files of D and the judge, and their saved models and classes files: a changed
    file reruns the jobs that read it."""
    return {**{f"{key}_weights": path for key, path in local_weights().items()}, **model_files()}


def robustness_args():
    r = config["robustness"]
    scales = " ".join(f"--scale {s}" for s in r["scales"]) or "--no-scale"
    flip = "--flip" if r["flip"] else "--no-flip"
    return f"{_flags([('jitter-px', r['jitter_px']), ('jitter-count', r['jitter_count']), ('robust-seed', r['seed'])])} {scales} {flip}"


def exemplar_target_args():
    """--targets naming every target of the run (exemplars are drawn for each)."""
    specs = [spec for kind in KINDS for spec in target_specs(kind, planned_targets(kind))]
    return " ".join(f"--targets {shlex.quote(s)}" for s in specs)


def index_inputs():
    inputs = {"records": f"{run_dir()}/records.parquet", "runs": all_chunk_runs(), "scores": all_chunk_scores()}
    if exemplars_on():
        inputs["exemplars"] = f"{run_dir()}/exemplars/exemplars.parquet"
    return inputs


def exemplars_arg(wildcards, input):
    return f"--exemplars {shlex.quote(input.exemplars)}" if "exemplars" in input.keys() else ""


def config_json():
    """The resolved config (the schema's defaults filled in), recorded in the index's provenance."""
    return shlex.quote(json.dumps(config, sort_keys=True, separators=(",", ":")))


def chunk_target_args(chunk):
    return " ".join(f"--targets {shlex.quote(spec)}" for spec in chunk.specs())


def method_args(method):
    """--preset and one --set per overridden setting: only this method's own (so that changing
    one method's settings reruns that method's jobs alone, by the params rerun trigger)."""
    sets = " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in method_overrides(method).items())
    seeds = config["methods"][method]["seeds"]
    extra = f" --seeds {seeds}" if seeds > 1 else ""  # one seed: the command as it always was
    return f"--preset {config['methods'][method]['preset']}{extra} {sets}".strip()


def compute_args():
    """How the generation jobs run (config `compute`): --precision, --channels-last, --fold-bn, --compile."""
    c = config["compute"]
    flags = f"--precision {c['precision']} --channels-last {c['channels_last']} --fold-bn {c['fold_bn']}"
    return flags + (" --compile" if c["compile"] else "")


def method_input_args(wildcards, input):
    """The chunk's method inputs (chunk_inputs) as `atlas generate` takes them: the flag of each
    (atlas.methods.INPUTS) with its file (`--decoder FILE`) or, for the photos, their folder."""
    return " ".join(
        f"{INPUTS[name].flag} {shlex.quote(given(input[name]))}"
        for name, (_, given) in METHOD_INPUT_FILES.items()
        if name in input.keys()
    )


def folder_of(wildcards, output):
    """The folder of a job's first named output (a tool's --out DIR)."""
    return os.path.dirname(output[0])


def dataset_folder(wildcards, input):
    """The folder of the dataset a job reads (its `images` input), whatever other inputs it has."""
    return os.path.dirname(input.images)


def folder_of_input(wildcards, input):
    return os.path.dirname(input[0])


def extract_args():
    d = config["dataset"]
    crops = d["augment_crops"]
    return _flags(
        [
            ("source", d["source"]),
            ("root", d["root"]),
            ("classes", d["classes"]),
            ("per-class", d["per_class"]),
            ("size", d["size"]),
            ("augment-crops", crops),
            ("val-fraction", d["val_fraction"]),
            ("seed", d["seed"]),
        ]
    )


def train_args():
    a = config["autoencoder"]
    args = _flags(
        [
            ("classifier", config["classifier"]["name"]),
            ("encoder", a["encoder"]),
            ("width", a["width"]),
            ("epochs", a["epochs"]),
            ("batch-size", a["batch_size"]),
            ("optimiser", a["optimiser"]),
            ("lr", a["lr"]),
            ("noise-std", a["noise_std"]),
            ("seed", a["seed"]),
        ]
    )
    if a["augment"] is not None:
        args += " --augment" if a["augment"] else " --no-augment"
    return args


def autoencoder_file(name):
    """A file of the autoencoder's run folder, named by a hash of everything that decides the
    training: `atlas train-dae` resumes a run from its checkpoint but refuses one with other
    settings, so other settings get a folder of their own (and an interrupted run resumes)."""
    decided_by = {
        "classifier": config["classifier"]["name"],
        "autoencoder": config["autoencoder"],
        "dataset": config["dataset"],
    }
    digest = hashlib.sha256(json.dumps(decided_by, sort_keys=True).encode()).hexdigest()[:12]
    return f"{run_dir()}/autoencoder/{digest}/{name}"


# --------------------------------------------------------------------------------------------
# Two models side by side (compare.smk): run B's config, names and arguments


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


def site_compare_inputs():
    return {"compare": compare_file()} if compare_on() else {}
