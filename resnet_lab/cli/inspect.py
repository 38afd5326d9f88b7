"""``python -m resnet_lab inspect --run RUN --image N [--layer L] --out DIR``: feature maps and Grad-CAM as PNGs."""

from __future__ import annotations

import argparse

from resnet_lab import inspect as I
from resnet_lab.cli.common import add_command, fail, positive_int, print_json
from resnet_lab.data import DataError
from resnet_lab.runs import RunError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "inspect", run=True,
        summary="write one test image's feature maps and Grad-CAM (predicted vs true class) as PNGs",
        description="Load a trained run, take test image N of its data source, and write into --out: the "
                    "image, a grid of the layer's strongest feature maps, Grad-CAM for the predicted and the "
                    "true class side by side, and a Grad-CAM sweep over every stage of the network.")
    parser.add_argument("--image", type=int, required=True, metavar="N",
                        help="index of the image in the full test split (as the Misclassified page shows it)")
    parser.add_argument("--layer", default=None, metavar="L",
                        help="layer to look at, e.g. layer3 (the sum x + F(x)), layer3.res (the branch F(x) alone) or layer2.0.conv1 (default: the last stage)")
    parser.add_argument("--top-k", type=positive_int, default=32, metavar="K",
                        help="feature maps in the grid: the K channels with the largest mean activation (default 32)")
    parser.add_argument("--signed", action="store_true",
                        help="signed Grad-CAM (captum's default) instead of the paper's ReLU'd map")
    parser.add_argument("--data", default=None,
                        help="data source, if not the run's own (a class-folder dir / .tar.gz, or cifar10)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs (created if missing)")
    return parser


def run(args) -> int:
    try:
        run_ = I.open_run(args.run, need_checkpoint=True)
        model = run_.load_model("cpu")
    except (I.InspectError, RunError) as exc:
        fail(str(exc))
    try:
        data = I.run_dataset(run_, args.data)
    except I.InspectError as exc:  # other classes than the run's
        fail(f"--data: {exc}" if args.data else str(exc))
    except DataError as exc:
        fail(str(exc))
    if not 0 <= args.image < data.n_test:
        fail(f"--image must be between 0 and {data.n_test - 1} (the test split of {data.source}); got {args.image}")
    classes = run_.classes or data.classes  # the same names: run_dataset checked them
    mean, std = run_.config.get("mean") or data.mean, run_.config.get("std") or data.std
    image, label = data.test_x[args.image], int(data.test_y[args.image])

    layers = I.list_layers(model)
    layer = args.layer or I.stages(model, layers)[-1]
    if layer not in {lay.name for lay in layers}:
        fail(f"no layer {layer!r} in {run_.config.get('model')}; choose one of: "
             + ", ".join(lay.name for lay in layers))
    shape = next(lay.shape for lay in layers if lay.name == layer)

    try:
        acts = I.activations(model, image, [layer], mean, std)
        fmap = acts.maps[layer]
        channels = I.top_channels(fmap, args.top_k)
        cams = I.gradcams(model, image, layer, [None, label], mean, std, relu=not args.signed)
        sweep = I.layer_sweep(model, image, cams[0].target, mean=mean, std=std, relu=not args.signed)
    except I.InspectError as exc:
        fail(str(exc))

    files = _write_pictures(I, args, image, label, classes, layer, fmap, channels, cams, sweep)
    pred = cams[0].target
    top5 = I.topk(cams[0].probs, 5)
    result = {"run": run_.id, "model": run_.config.get("model"), "image": args.image, "true": classes[label],
              "predicted": classes[pred], "correct": pred == label,
              "top5": [{"class": classes[c], "prob": round(p, 4)} for c, p in top5],
              "layer": layer, "layer_shape": list(shape), "relu": not args.signed,
              "gradcam_ms": round(cams[0].seconds * 1000, 1), "constant_maps": [c.layer for c in cams if c.constant],
              "files": {k: str(v) for k, v in files.items()}}
    if args.json:
        print_json(result)
        return 0
    print(f"run {run_.id} ({result['model']}), test image #{args.image}: true {classes[label]}, "
          f"predicted {classes[pred]} ({'right' if pred == label else 'wrong'})")
    print("top-5: " + ", ".join(f"{classes[c]} {p:.1%}" for c, p in top5))
    c, h, w = shape
    print(f"layer {layer}: {c} channels of {h}x{w}; grid = the {len(channels)} channels with the largest mean activation")
    for cam in cams:
        if cam.note:
            print(f"note ({classes[cam.target]}): {cam.note}")
    print(f"Grad-CAM: {result['gradcam_ms']:.0f} ms per map on the CPU")
    for key, path in files.items():
        print(f"wrote {path}")
    return 0


def _write_pictures(I, args, image, label, classes, layer, fmap, channels, cams, sweep) -> dict:
    """The four PNGs into --out (image, activation grid, Grad-CAM strip, layer sweep); returns their paths."""
    from pathlib import Path

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create --out folder {out}: {exc.strerror or exc}")
    stem = f"image{args.image}"
    safe_layer = layer.replace(".", "_")
    files = {
        "image": out / f"{stem}.png",
        "activations": out / f"{stem}-activations-{safe_layer}.png",
        "gradcam": out / f"{stem}-gradcam-{safe_layer}.png",
        "sweep": out / f"{stem}-gradcam-sweep.png",
    }
    pngs = {"image": I.to_png(I.upscale(image, 8)),
            "activations": I.to_png(I.feature_grid(fmap, channels, cols=8, cell=64))}
    panels = [(I.upscale(image, 8), f"test #{args.image}: {classes[label]}")]
    for cam, role in zip(cams, ("predicted", "true")):
        panels.append((_cam_panel(I, image, cam), f"{role}: {classes[cam.target]} ({cam.probs[cam.target]:.0%})"))
    pngs["gradcam"] = I.to_png(I.strip(panels))
    sweep_panels = [(_cam_panel(I, image, cam, smooth=False), f"{cam.layer} {cam.grid[0]}x{cam.grid[1]}")
                    for cam in sweep]
    pngs["sweep"] = I.to_png(I.strip(sweep_panels))
    for key, png in pngs.items():
        try:
            files[key].write_bytes(png)
        except OSError as exc:  # a read-only folder, a full disk, a folder where the file should go
            fail(f"cannot write {files[key].name} into the --out folder {out}: {exc.strerror or exc}; "
                 "choose a folder you can write to")

    return files


def _cam_panel(I, image, cam, smooth: bool = True):
    return I.overlay(image, cam.normalized, alpha=0.5, signed=not cam.relu, size=256, smooth=smooth)
