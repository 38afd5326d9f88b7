"""Module-level job functions for ``JobRegistry.start`` (see resnet_lab/jobs.py for the contract).

Each runs in a worker process: it receives the worker-side job and plain, picklable arguments (a data *source*
string, a config dict), loads what it needs there (the decoded-data cache makes that quick) and reports through
``job.emit`` / ``job.stop_event``. Pages start jobs with these instead of closures over loaded objects, which
cannot cross a process boundary.
"""

from __future__ import annotations

from pathlib import Path

from resnet_lab import assignment
from resnet_lab import attributions as A
from resnet_lab import explain as E
from resnet_lab import lr_finder, models, training
from resnet_lab.data import DataError, load_dataset
from resnet_lab.experiments import degradation as D
from resnet_lab.experiments import search as S
from resnet_lab.models.files import OUTPUT_NOTES
from resnet_lab.receptive_field import receptive_fields, RFError
from resnet_lab.report import write_report
from resnet_lab.report import LR_TEST_FILE
from resnet_lab.runs import atomic_write_json, open_run_folder


def train(job, config: dict, source: str | None = None, lr_test: dict | None = None):
    """One training run (``resnet_lab.training.train``); returns the ``Run``. ``lr_test``: the range test the
    run's LRs were picked from (``{"lrs", "losses", ...}``), kept in the run folder as ``lr_test.json`` as soon as
    the run exists, so its report can show the curve with the picked LRs."""
    cfg = training.TrainConfig.from_dict({**config, **({"data": source} if source else {})})

    def callback(event):
        if lr_test and event.get("type") == "start" and event.get("run_path"):
            atomic_write_json(Path(event["run_path"]) / LR_TEST_FILE, lr_test)
        return job.emit(event)

    return training.train(cfg, callback=callback, stop_event=job.stop_event)


def lr_find(job, config: dict, source: str | None = None):
    """The LR range test (``resnet_lab.lr_finder.find_lr``); returns the ``LRFindResult``."""

    cfg = lr_finder.LRFindConfig.from_dict({**config, **({"data": source} if source else {})})
    return lr_finder.find_lr(cfg, callback=job.emit, stop_event=job.stop_event)


def degradation(job, suite: str, source: str | None = None, **kwargs):
    """A depth-degradation suite (``resnet_lab.experiments.degradation.run_suite``); returns its result dict."""

    return D.run_suite(suite, data=source, callback=job.emit, stop_event=job.stop_event, **kwargs)


def search(job, config: dict, storage: str, study_name: str, source: str | None = None, any_owner: bool = False):
    """Optuna trials (``resnet_lab.experiments.search.run_search``); returns the study summary. ``any_owner``: the
    teacher may resume any student's study."""

    return S.run_search(S.SearchConfig.from_dict(config), storage=storage, study_name=study_name, data=source,
                        callback=job.emit, stop_event=job.stop_event, any_owner=any_owner)


# -- short page computations: run in the quick lane, once per input for every session (jobs.SharedResults) --------

def attributions(job, run_path: str, reference: bool, image, layer: str, targets: list, methods: list,
                 mean: tuple, std: tuple) -> dict:
    """Every method's map (``resnet_lab.attributions.attribute``) for one image and each class in ``targets``:
    ``{target: {method: {"map", "magnitude", "seconds"}}}``."""

    job.set_progress(0.0, "loading the trained network")
    model = open_run_folder(run_path, reference).load_model("cpu").eval()
    out = {}
    for i, target in enumerate(targets):
        job.set_progress(i / len(targets), f"{len(methods)} methods for class {i + 1} of {len(targets)}")
        maps = A.attribute(model, image, int(target), layer, methods, mean=mean, std=std)
        out[int(target)] = {m: {"map": a.map, "magnitude": a.magnitude, "seconds": a.seconds} for m, a in maps.items()}
    return out


def sanity(job, run_path: str, reference: bool, image, layer: str, target: int, methods: list, mean: tuple,
           std: tuple):
    """The cascading randomisation check (``resnet_lab.attributions.sanity_check``) on the run's network."""

    job.set_progress(0.0, "loading the trained network")
    model = open_run_folder(run_path, reference).load_model("cpu").eval()
    return A.sanity_check(model, image, int(target), layer, methods, mean=mean, std=std,
                          progress=job.set_progress)


def data_randomisation(job, run_path: str, reference: bool, image, layer: str, target: int, methods: list,
                       mean: tuple, std: tuple):
    """The data-randomisation test (``resnet_lab.attributions.data_randomisation``) against the shipped network
    trained on shuffled labels."""

    job.set_progress(0.0, "loading both networks")
    run = open_run_folder(run_path, reference)
    other = E.shuffled_run(run.config.get("model"))
    return A.data_randomisation(run.load_model("cpu").eval(), other.load_model("cpu").eval(), image, int(target),
                                layer, methods, mean=mean, std=std, shuffled_mean=tuple(other.config["mean"]),
                                shuffled_std=tuple(other.config["std"]))


def faithfulness(job, run_path: str, reference: bool, layer: str, methods: list, mean: tuple, std: tuple,
                 image=None, target: int | None = None, sample: int | None = None, source: str | None = None):
    """ROAD faithfulness (``resnet_lab.explain.explain``, ``faithfulness=True``) of one image for ``target``, or of
    ``sample`` class-balanced test images of ``source`` (the same images as ``explain --sample``) for their
    predicted classes. Returns the explanation's JSON (no maps)."""

    job.set_progress(0.0, "loading the trained network")
    model = open_run_folder(run_path, reference).load_model("cpu").eval()
    if sample is not None:
        data = load_dataset(source)
        indices = E.pick_images(data, sample=sample)
        images, targets = [data.test_x[i] for i in indices], [None] * len(indices)
    else:
        indices, images, targets = [-1], [image], [target]
    return E.explain(model, images, indices, targets, layer, methods, mean=mean, std=std, faithfulness=True,
                     progress=job.set_progress).to_json()


def init_profile(job, source: str | None, images: int, seeds: int, zero_init: bool) -> dict:
    """The depth-degradation page's initialisation view (``experiments.degradation.init_profile``)."""

    job.set_progress(0.0, "loading the training images")
    x, y = D.init_batch(load_dataset(source), images)
    job.set_progress(0.1, f"building and probing {2 * len(D.INIT_DEPTHS) * seeds} fresh nets")
    return D.init_profile(x, y, seeds=tuple(range(seeds)), zero_init=zero_init)


def decode(job, source: str) -> dict:
    """Decode a data source into the on-disk cache (``resnet_lab.data.load_dataset``), so the app process only
    ever reads the cache. A DataError comes back as its parts (it is shown, not a crash)."""

    def progress(done: int, total: int, message: str = "") -> None:
        job.set_progress(done / max(total, 1), message or f"decoding images {done:,}/{total:,}")

    try:
        data = load_dataset(source, progress=progress)
    except DataError as exc:
        return {"error": {"path": exc.path, "problem": exc.problem, "expected": exc.expected}}
    return {"train": int(data.n_train), "test": int(data.n_test)}


def model_file(job, spec: str, options: dict | None = None) -> dict:
    """A student's model file, checked in a worker (its code never runs in the app process of a class server):
    what is wrong with it, or its size, what it returns (and what to know about that), its receptive field at the
    last spatial layer and the assignment's architecture check."""
    job.set_progress(0.0, "running the file and a 32×32 batch through the network")
    try:
        model = models.build(spec, **(options or {}))
    except models.ModelFileError as exc:
        return {"problem": str(exc)}
    job.set_progress(0.5, "tracing the graph: receptive fields and the assignment's architecture")
    items = assignment.check_network(model)
    try:
        final = receptive_fields(model, 32).final
        rf = {"layer": final.name, "rf_max": final.rf_max[0], "rf_min": final.rf_min[0], "jump": final.jump[0]}
    except RFError as exc:
        rf = {"problem": str(exc)}
    return {"problem": None, "params": models.count_params(model), "output_kind": model.output_kind,
            "note": OUTPUT_NOTES.get(model.output_kind, ""), "rf": rf, "check": [i.to_dict() for i in items]}


def rf_table(job, spec: str, size: int):
    """The analytic receptive fields of a student's model file, traced in a worker: ``(RFTable, None)`` or
    ``(None, why not)``."""
    job.set_progress(0.0, "building and tracing the network")
    try:
        return receptive_fields(models.build(spec), size), None
    except (RFError, models.ModelFileError) as exc:
        return None, str(exc)


def report(job, run_path: str, reference: bool) -> dict:
    """A finished run's assignment check and its hand-in report (``resnet_lab.report``) as a zip, made in a worker:
    ``{"check": [items], "zip": bytes, "name": file name}``."""
    import io
    import tempfile
    import zipfile

    job.set_progress(0.0, "loading the run and its network")
    run = open_run_folder(run_path, reference)
    items = assignment.check_run(run)
    job.set_progress(0.3, "writing the report: summary, receptive fields, curves, mistakes, Grad-CAM")
    with tempfile.TemporaryDirectory() as tmp:
        readme = write_report(run, tmp)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(readme.parent.iterdir()):
                zf.write(path, f"report-{run.id}/{path.name}")
    return {"check": [i.to_dict() for i in items], "zip": buffer.getvalue(), "name": f"report-{run.id}.zip"}
