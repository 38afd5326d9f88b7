"""``python -m resnet_lab explain --run RUN --image N [N ...] | --sample K [--layer L] [--methods ...] [--sanity]
[--data-randomisation] [--faithfulness] [--json] [--out DIR]``: attribution maps, both sanity checks and ROAD
faithfulness of a trained run, measured (``resnet_lab.explain``; the Grad-CAM page shows the same numbers)."""

from __future__ import annotations

import argparse
from pathlib import Path

from resnet_lab import attributions as A
from resnet_lab import explain as E
from resnet_lab import inspect as I
from resnet_lab.cli.common import add_command, fail, non_negative_int, positive_int, print_json, shown
from resnet_lab.data import DataError
from resnet_lab.runs import RunError

# Method names on the command line: lower case, no spaces or symbols (gradient-x-input), or the full name.
METHOD_FLAGS = {m.lower().replace(" × ", "-x-").replace(" ", "-"): m for m in A.METHODS}


def method_arg(text: str) -> str:
    key = text.strip().lower().replace(" × ", "-x-").replace(" ", "-")
    if key in METHOD_FLAGS:
        return METHOD_FLAGS[key]
    raise argparse.ArgumentTypeError(f"unknown method {text!r}; choose from {', '.join(METHOD_FLAGS)}")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "explain", run=True,
        summary="attribution maps of test images, the two sanity checks and ROAD faithfulness, measured",
        description="Explain a trained run's predictions on test images with every attribution method (Grad-CAM, "
                    "Guided Grad-CAM, Guided Backprop, Saliency, Gradient × Input, Integrated Gradients, "
                    "Occlusion). --sanity: the model-randomisation check (Adebayo et al. 2018), Spearman rho with "
                    "the trained map after re-initialising each part from the classifier down. "
                    "--data-randomisation: the maps of the shipped network trained on shuffled labels against the "
                    "run's (ResNet-20 runs). --faithfulness: ROAD (pytorch-grad-cam), the class probability after "
                    "removing 10-90% of the pixels most / least relevant first. The last line of --json is one "
                    "JSON object.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--image", type=non_negative_int, nargs="+", metavar="N",
                       help="index(es) of the image in the full test split (as the Misclassified page shows it)")
    which.add_argument("--sample", type=positive_int, metavar="K",
                       help="K class-balanced test images (the same every time; 10 = one per class)")
    parser.add_argument("--layer", default=None, metavar="L", help="the Grad-CAM layer (default: the last stage)")
    parser.add_argument("--methods", type=method_arg, nargs="+", default=None, metavar="M",
                        help="methods to run (default all): " + ", ".join(METHOD_FLAGS))
    parser.add_argument("--target", type=non_negative_int, default=None, metavar="C",
                        help="class index to explain (default: each image's predicted class)")
    parser.add_argument("--sanity", action="store_true", help="the model-randomisation check")
    parser.add_argument("--data-randomisation", action="store_true",
                        help="the data-randomisation test against the shipped shuffled-label network")
    parser.add_argument("--faithfulness", action="store_true", help="ROAD scores (MoRF, LeRF, combined)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the random weights and the imputation noise (default 0)")
    parser.add_argument("--data", default=None,
                        help="data source, if not the run's own (a class-folder dir / .tar.gz, or cifar10)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="also write the maps (and the sanity and ROAD curves) as PNGs into DIR")
    return parser


def run(args) -> int:
    try:
        run_ = I.open_run(args.run, need_checkpoint=True)
        model = run_.load_model("cpu").eval()
        data = I.run_dataset(run_, args.data)
    except (I.InspectError, RunError, DataError) as exc:
        fail(str(exc))
    classes = run_.classes or data.classes
    mean, std = run_.config.get("mean") or data.mean, run_.config.get("std") or data.std
    layers = I.list_layers(model)
    layer = args.layer or I.stages(model, layers)[-1]
    if layer not in {lay.name for lay in layers}:
        fail(f"no layer {layer!r} in {run_.config.get('model')}; choose one of: "
             + ", ".join(lay.name for lay in layers))
    if args.target is not None and args.target >= len(classes):
        fail(f"--target must be between 0 and {len(classes) - 1} ({len(classes)} classes); got {args.target}")
    shuffled = None
    if args.data_randomisation:
        try:
            other = E.shuffled_run(run_.config.get("model"))
            shuffled = (other.load_model("cpu").eval(), other.config["mean"], other.config["std"])
        except RunError as exc:
            fail(f"--data-randomisation: {exc}")
    try:
        indices = E.pick_images(data, args.image, args.sample)
        images = [data.test_x[i] for i in indices]
        result = E.explain(model, images, indices, [args.target] * len(indices), layer,
                           args.methods or list(A.METHODS), mean=mean, std=std, sanity=args.sanity,
                           faithfulness=args.faithfulness, shuffled=shuffled, seed=args.seed)
    except I.InspectError as exc:
        fail(str(exc))
    summary = {"run": run_.id, "model": run_.config.get("model"),
               "labels": [int(data.test_y[i]) for i in indices], "classes": list(classes), **result.to_json()}
    if args.out:
        summary["files"] = _write(Path(args.out), images, classes, result)
    if args.json:
        print_json(summary)
        return 0
    _print(run_, classes, summary)
    return 0


def _print(run_, classes, s: dict) -> None:
    print(f"run {run_.id} ({shown(s['model'])}), layer {s['layer']}, {len(s['images'])} test image(s): "
          + ", ".join(f"#{i} {shown(classes[t])}" for i, t in zip(s["images"], s["targets"])))
    width = max(len(m) for m in s["methods"] + [E.RANDOM_ORDER])
    if s["sanity"]:
        steps = s["sanity"]["steps"]
        print("\nmodel randomisation: Spearman rho of |map| with the trained network's, mean over images")
        print(" " * (width + 2) + " ".join(f"{step[:8]:>8}" for step in steps))
        for m in s["methods"]:
            print(f"  {m:<{width}}" + " ".join("       -" if v is None else f"{v:8.2f}" for v in s["sanity"]["mean"][m]))
        v = s["sanity"]["verdict"]
        for key, words in (("fail", f"fail (rho >= {A.FAIL_RHO:g} after {steps[1]}, or >= {A.SANITY_RHO:g} at the end)"),
                           ("partly", f"partly survive (rho >= {A.SANITY_RHO:g} after {steps[1]})"),
                           ("pass", "pass (the map changes with the weights)")):
            if v[key]:
                print(f"  {words}: {', '.join(v[key])}")
    if s["data_randomisation"]:
        print("\ndata randomisation: rho with the network trained on shuffled labels, mean over images")
        for m, r in s["data_randomisation"]["mean"].items():
            print(f"  {m:<{width}}" + ("       -" if r is None else f"{r:8.2f}"))
        v = s["data_randomisation"]["verdict"]
        if v["fail"]:
            print(f"  fail (rho >= {A.SANITY_RHO:g}: the same map without the labels' information): {', '.join(v['fail'])}")
    if s["faithfulness"]:
        print("\nROAD (pytorch-grad-cam): class probability, mean over 10-90% removed; MoRF lower and LeRF higher "
              "are better")
        print(f"  {'':<{width}}     MoRF     LeRF     ROAD")
        for m in s["faithfulness"]["ranking"]:
            c = s["faithfulness"]["mean"][m]
            print(f"  {m:<{width}} {c['morf_area']:8.3f} {c['lerf_area']:8.3f} {c['road']:+8.3f}")
    print(f"\n{s['seconds']:.1f} s")
    for path in (s.get("files") or {}).values():
        print(f"wrote {path}")


def _write(out: Path, images, classes, result) -> dict:
    """The PNGs: each image with every method's map, and the sanity and ROAD curves (matplotlib)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        files = {}
        for index, image, target, maps in zip(result.images, images, result.targets, result.maps):
            panels = [(I.upscale(image, 5), f"#{index}: {classes[target]}")]
            panels += [(I.overlay(image, maps[m], 0.6, size=160), m) for m in result.methods]
            path = out / f"image{index}-methods.png"
            path.write_bytes(I.to_png(I.strip(panels)))
            files[f"image{index}"] = str(path)
        if result.sanity or result.faithfulness:
            files.update(_curves(out, result))
    except OSError as exc:
        fail(f"cannot write into the --out folder {out}: {exc.strerror or exc}; choose a folder you can write to")
    return files


def _curves(out: Path, result) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    if result.sanity:
        fig, ax = plt.subplots(figsize=(7, 4))
        for m in result.methods:
            ax.plot(result.sanity["steps"], result.sanity["mean"][m], marker="o", label=m)
        ax.set(ylim=(-1.05, 1.05), ylabel="Spearman ρ with the trained map", xlabel="re-initialised so far (top down)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "sanity.png", dpi=110)
        plt.close(fig)
        files["sanity"] = str(out / "sanity.png")
    if result.faithfulness:
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for m, c in result.faithfulness["mean"].items():
            a.plot(c["fractions"], c["morf"], marker=".", label=m)
            b.plot(c["fractions"], c["lerf"], marker=".", label=m)
        a.set(title="MoRF: most relevant removed first (lower is better)", xlabel="fraction removed",
              ylabel="class probability")
        b.set(title="LeRF: least relevant removed first (higher is better)", xlabel="fraction removed")
        b.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "faithfulness.png", dpi=110)
        plt.close(fig)
        files["faithfulness"] = str(out / "faithfulness.png")
    return files
