"""Data & Models: what CIFAR-10 looks like, what augmentation does to it, and what each network is made of."""

from __future__ import annotations

import numpy as np
import streamlit as st

import lab_ui

def repeat_chance(epochs: int) -> tuple[int, float]:
    """(number of distinct versions, chance that one image is shown in exactly the same version twice within
    ``epochs`` epochs), from the training augmentation's own settings (resnet_lab.transforms.sample_params):
    crop offsets × flips, a cutout hole on a fraction of the images. Birthday-problem estimate:
    1 - exp(-pairs × P(two epochs draw the same version))."""
    import inspect as pyinspect
    import math

    d = {k: v.default for k, v in pyinspect.signature(sample_params).parameters.items()}
    offsets = (2 * d["pad"] + 1) ** 2
    holes = (d["size"] - d["cutout"] + 1) ** 2
    p_flip_same = d["flip_p"] ** 2 + (1 - d["flip_p"]) ** 2
    p_cut_same = (1 - d["cutout_p"]) ** 2 + d["cutout_p"] ** 2 / holes
    same = p_flip_same * p_cut_same / offsets
    versions = offsets * 2 * (1 + holes)
    return versions, 1 - math.exp(-epochs * (epochs - 1) / 2 * same)


import model_file_ui  # noqa: E402
from resnet_lab import models, tasks, transforms  # noqa: E402
from resnet_lab.models import files as model_files  # noqa: E402
from resnet_lab.training import PRESETS  # noqa: E402
from resnet_lab.transforms import sample_params  # noqa: E402

_EPOCHS = int(PRESETS["assignment"]["epochs"])
_VERSIONS, _REPEAT = repeat_chance(_EPOCHS)

lab_ui.page_intro(
    "Data & Models",
    idea="CIFAR-10 is 60,000 tiny 32×32 photos in ten classes. Training shows each image in a different version "
         f"most of the time: shifted, maybe mirrored and, half the time, partly hidden — {_VERSIONS:,} possible "
         f"versions, but not equally likely, so within the assignment's {_EPOCHS} epochs about "
         f"{_REPEAT:.0%} of the images are shown in exactly the same version at least twice. Either way the "
         "network has to learn the object, not the pixels. The network itself is a stack of layers whose size "
         "and cost you can read off a table.",
    try_="Press **Re-roll** a few times and follow one image across the two grids. Then pick `resnet20` and "
         "`plain20` in the model box: same layers, same parameter count — the only difference is the shortcut. "
         "Compare with `resnet18`, forty times bigger.",
    notice="How little there is in 32×32 pixels (could *you* tell a cat from a dog in every tile?). A flipped ship is "
           "still a ship, but a flipped digit would not be — augmentation encodes what we know about the classes.",
)

# ------------------------------------------------------------------------------------------------------- data
st.header("The images", divider="gray")
data = lab_ui.data_or_none()
GRID_SCALE = 3  # 32 px -> 96 px tiles, nearest-neighbour, so single pixels stay visible


def pick_examples(labels: np.ndarray, n_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    """`per_class` indices of each class, in class order: row c of the grid is class c."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), size=min(per_class, int((labels == c).sum())),
                                      replace=False) for c in range(n_classes)])


@st.cache_data(show_spinner=False, max_entries=32)
def image_grid(images: np.ndarray, labels: tuple[str, ...], per_row: int, scale: int = GRID_SCALE) -> np.ndarray:
    """Tile uint8 HWC images into rows of `per_row`, each row labelled on the left, upscaled crisply."""
    from PIL import Image, ImageDraw, ImageFont

    tile, gap, label_w = 32 * scale, 4, 190
    rows = len(labels)
    canvas = Image.new("RGB", (label_w + per_row * (tile + gap), rows * (tile + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=30)
    for r, name in enumerate(labels):
        y = r * (tile + gap)
        draw.text((label_w - 12, y + tile // 2), name, fill=(40, 40, 40), font=font, anchor="rm")
        for c in range(per_row):
            i = r * per_row + c
            if i < len(images):
                img = Image.fromarray(images[i]).resize((tile, tile), Image.Resampling.NEAREST)
                canvas.paste(img, (label_w + c * (tile + gap), y))
    return np.asarray(canvas)


@st.cache_data(show_spinner=False, max_entries=32)
def augment(images: np.ndarray, seed: int, mean: tuple, std: tuple) -> np.ndarray:
    """The training augmentation (resnet_lab.transforms, the same code the trainer runs) on these images,
    un-normalized back to uint8 for display."""
    import torch

    params = transforms.sample_params(len(images), torch.Generator().manual_seed(int(seed)))
    return transforms.to_display(transforms.augment_batch(images, params, mean, std), mean, std)


if data is not None:
    st.caption(f"{lab_ui.public(data.source)} — {data.n_train:,} training and {data.n_test:,} test images; "
               f"per class in training: {', '.join(f'{c} {n:,}' for c, n in zip(data.classes, data.class_counts()))}.")
    per_class = st.slider("Images per class", 4, 12, 8, key="per_class")
    idx = pick_examples(data.train_y, data.num_classes, per_class)
    originals = data.train_x[idx]
    st.session_state.setdefault("aug_seed", 0)

    def reroll() -> None:
        st.session_state["aug_seed"] += 1

    augmented = augment(originals, st.session_state["aug_seed"], tuple(data.mean), tuple(data.std))
    labels = tuple(data.classes)

    controls, roll = st.columns([4, 1], vertical_alignment="bottom")
    controls.markdown("The same images, left as stored, right after one random draw of the training augmentation "
                      "(shown un-normalized).")
    roll.button("Re-roll", key="reroll", on_click=reroll, icon=":material/casino:", width="stretch",
                help="Draw new random crops, flips and cutout holes for the same images")
    left, right = st.columns(2, gap="medium")
    with left:
        st.subheader("As stored")
        st.image(image_grid(originals, labels, per_class), width="stretch")
    with right:
        st.subheader(f"Augmented · roll {st.session_state['aug_seed']}")
        st.image(image_grid(augmented, labels, per_class), width="stretch")

    mean = ", ".join(f"{v:.3f}" for v in data.mean)
    std = ", ".join(f"{v:.3f}" for v in data.std)
    st.markdown(
        f"""
**The training augmentation, step by step** (test images get only step 5):

1. **Pad 4** — add a 4-pixel border, a mirror image of the edge, around the 32×32 image → 40×40.
2. **Random crop 32** — cut a 32×32 window at a random offset: the object moves by up to ±4 pixels, so the network
   must not care *where* it is.
3. **Horizontal flip** — mirror half of the images: left and right mean nothing for these classes.
4. **Cutout 8×8** — on half of the images, blank an 8×8 square at a random place with the dataset's mean colour
   (the grey squares), so the network cannot rely on one part (a wheel, an ear) and learns from the whole object.
5. **Normalize** — subtract the per-channel mean ({mean}) and divide by the std ({std}) of the training set,
   so each input channel has mean 0 and variance 1. The right grid is shown *un*-normalized so you can see it.
"""
    )

# ------------------------------------------------------------------------------------------------------ models
st.header("The models", divider="gray")


def human(n: float) -> str:
    """0.27 M rather than 269.72 K: model sizes are quoted in millions from 0.1 M up."""
    for unit, size, start in (("G", 1e9, 1e9), ("M", 1e6, 1e5), ("K", 1e3, 1e3)):
        if abs(n) >= start:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f}"


@st.cache_data(show_spinner="Tracing the model …", max_entries=16)
def model_summary(name: str, options: tuple) -> tuple[list[dict], dict]:
    rows = models.summary(models.build(name, **dict(options)), (1, 3, 32, 32))
    return list(rows), rows.totals


names = models.list_models()
pick, opts_col = st.columns([1, 2], gap="large")
name = pick.selectbox("Model", names, index=names.index("resnet20") if "resnet20" in names else 0, key="model")
info = models.model_info(name)
options = {}
with opts_col:
    st.markdown(f"**{name}** · {info['family']} — {info['description']}  \n*{info['paper']}*")
    for key, opt in info["options"].items():
        options[key] = st.selectbox(key, opt["choices"], index=opt["choices"].index(opt["default"]),
                                    key=f"model_opt_{key}", help=opt["help"])

rows, totals = model_summary(name, tuple(sorted(options.items())))
c1, c2, c3, c4 = st.columns(4)
c1.metric("Parameters", human(totals["params"]), help=f"{totals['params']:,} weights and biases")
c2.metric("MACs per image", human(totals["macs"]),
          help=f"{totals['macs']:,} multiply-accumulates for one 32×32 image (≈ 2 FLOPs each)")
c3.metric("Weights in memory", f"{totals['param_mb']:.1f} MB", help="float32 parameters")
c4.metric("Activations per image", f"{totals['forward_backward_mb']:.1f} MB",
          help="outputs kept for the backward pass, one image; multiply by the batch size")

max_depth = max((r["depth"] for r in rows), default=1)
depth = st.slider("Table detail (1 = stages, deeper = blocks, then single layers)", 1, max_depth,
                  min(2, max_depth), key="summary_depth")


def subtree(row_name: str) -> list[dict]:
    return [r for r in rows if r["name"] == row_name or r["name"].startswith(row_name + ".")]


table = [{
    "layer": "\u2003" * (r["depth"] - 1) + r["name"],
    "type": r["type"],
    "output": " × ".join(str(d) for d in r["output_shape"][1:]),
    "params": r["params_total"],
    "MACs": sum(s["macs"] for s in subtree(r["name"])),
} for r in rows if r["depth"] <= depth]
st.dataframe(table, hide_index=True, width="stretch", height=min(38 + 35 * len(table), 560),
             column_config={"params": st.column_config.NumberColumn(format="localized"),
                            "MACs": st.column_config.NumberColumn(format="compact")})
st.caption("Output shapes are channels × height × width for one image. Where the width doubles the resolution "
           "halves: the cost per layer stays about the same while each unit sees a larger part of the image.")

# ------------------------------------------------------------------------------------------------ your network
st.header("Your network", divider="gray")
st.markdown("Wrote your own `custom_resnet.py` for the assignment? Upload it here: the lab runs a batch of 32×32 "
            "images through it, reads its layers off the traced graph and checks it against the assignment "
            "(PrepLayer 64 → Layer1 128 + ResBlock → Layer2 256 → Layer3 512 + ResBlock → MaxPool 4 → FC 10). Then "
            "train it, sweep its LR and look at its receptive fields on the other pages. **Loading a file runs its "
            "code** — it is Python; here it runs in a separate worker process. From the command line: "
            "`python -m resnet_lab check --model my_net.py:Net`.")
if not lab_ui.model_files_allowed():
    st.info("Model files are off on this class server: loading one runs its code, so the teacher decides (the "
            "`model_files` setting, `true` to allow it). The lab's own networks above work as always.",
            icon=":material/lock:")
else:
    upload = st.file_uploader("Your model file (.py)", type=["py"], key="my_model_upload",
                              help="A Python file with your network class (a torch.nn.Module).")
    if upload is not None:
        try:
            text = upload.getvalue().decode("utf-8")
        except UnicodeDecodeError:
            text = None
            st.error(f"{lab_ui.md_escape(upload.name)} is not UTF-8 text: save it as a plain .py file and upload it "
                     "again.", icon=":material/error:")
        classes = model_files.classes_in(text) if text is not None else []
        if text is not None and not classes:
            st.error(f"{lab_ui.md_escape(upload.name)} defines no class (or has a syntax error): a network is a "
                     "class that inherits from nn.Module.", icon=":material/error:")
        if classes:
            default = next((i for i, c in enumerate(classes) if c.lower() in ("net", "customresnet", "model")),
                           len(classes) - 1)
            cls = st.selectbox("Network class", classes, index=default, key="my_model_class",
                               help="The class the lab should build (read from the file without running it).")
            spec = model_files.save_upload(text, upload.name, cls)
            result = lab_ui.computed("model_file", tasks.model_file, f"a check of {upload.name}:{cls}",
                                     "my_model_check", spec=spec)
            if result is not None:
                model_file_ui.show(spec, result)
