"""The suites (which plain and residual nets, how deep, on how many images, for how long) and the one training recipe
every net of a suite shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from resnet_lab.config import runs_dir
from resnet_lab.models import list_models
from resnet_lab.settings import invalid
from resnet_lab.training import TrainConfig

FORMAT = "resnet_lab.degradation/1"
FAMILIES = ("plain", "resnet")


class DegradationError(Exception):
    """A suite that cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class Suite:
    name: str
    label: str
    depths: tuple[int, ...]
    epochs: int
    batch_size: int
    lr_max: float
    subset: int | None = None  # training images (class-balanced); None = all
    test_subset: int | None = None
    note: str = ""
    width: int = 16  # first-stage filters (the paper: 16)
    augment: bool = True  # crop + flip (the paper); off measures optimisation alone
    zero_init: bool = False  # residual branches end on a BN with gamma = 0
    stats_images: int = 256  # test images for the per-layer statistics


SUITES: dict[str, Suite] = {
    # The lesson on a CPU in class time. Why these choices (the page says it too):
    # - depth 8 vs 32: one block per stage against five — the widest depth ratio (4x) a CPU can afford;
    # - width 8 (8/16/32 filters): a quarter of the paper's multiply-adds, so 32 layers train in seconds;
    # - no augmentation, 1,000 images, 12 epochs: degradation is about *optimisation*, so the training error is
    #   measured on exactly the images the nets fit. In 8 epochs ResNet-32 was still behind ResNet-8 (63.4% vs
    #   57.7%, seed 0); in 12 it is 8.8-16.3 points ahead over seeds 0-2 (docs/experiments.md).
    # - one thread per net, two nets at a time in worker processes (run_suite): the result is the same bits
    #   whatever the machine's thread count (with 2 threads per net, seed 0 once ended +1.8 instead of -16.3),
    #   and two single-threaded nets use 2 cores better than one net with 2 threads.
    "cpu": Suite("cpu", "CPU (class demo): plain/residual 8 and 32 layers, 8 filters wide, 1,000 images",
                 depths=(8, 32), epochs=12, batch_size=32, lr_max=0.1, subset=1000, test_subset=500, width=8,
                 augment=False, stats_images=128,
                 note="CPU demo, the default without a GPU: the paper's nets cut down (8 instead of 16 filters, "
                      "depths 8 and 32, 1,000 training images without augmentation, 12 epochs) so that all four "
                      "nets train in a few minutes on 2 CPU cores, two at a time. Training error, not test error, "
                      "is the lesson: 1,000 images without augmentation overfit, so the test error is far above "
                      "the paper's."),
    # The demonstration for a GPU: the four nets of the paper's comparison on all of CIFAR-10, short enough
    # to run during a lecture.
    "quick": Suite("quick", "Quick (GPU): plain/residual 20 and 56 on all of CIFAR-10",
                   depths=(20, 56), epochs=12, batch_size=128, lr_max=0.1,
                   note="4 nets x 12 epochs on 50,000 images. Made for a GPU (target: under 3 minutes on one H100); "
                        "on a CPU it takes hours — use 'cpu' there."),
    # The paper's Fig. 6 depths (20/32/44/56; 110 on request), with a longer schedule.
    "paper": Suite("paper", "Paper (GPU): depths 20/32/44/56 on all of CIFAR-10",
                   depths=(20, 32, 44, 56), epochs=30, batch_size=128, lr_max=0.1,
                   note="8 nets (10 with 110 layers) x 30 epochs on 50,000 images: tens of minutes on a GPU. "
                        "The paper trained for ~160 epochs (64k iterations)."),
    # The first CPU demo, kept so its shipped result (assets/degradation/mini.json) can be re-run. It shows only
    # the plain half: ResNet-56 does not beat ResNet-20 in 4 epochs.
    "mini": Suite("mini", "Mini (old CPU demo): plain/residual 20 and 56 on a 3,000-image subset",
                  depths=(20, 56), epochs=4, batch_size=32, lr_max=0.1, subset=3000, test_subset=1000,
                  note="The first CPU demo: the four nets of 'quick' on 3,000 training / 1,000 test images for 4 "
                       "epochs (4–8 minutes on 2 CPU cores). It shows the plain half only — ResNet-56 does not "
                       "overtake ResNet-20 in 4 epochs. Superseded by 'cpu'."),
}

# The shared recipe. cutout 0: the paper used crop + flip only. pipeline "torch": the same batched augmentation
# on every device, so a CPU and a GPU run see the same images in the same order.
RECIPE = dict(optimizer="sgd", momentum_max=0.9, momentum_min=0.9, nesterov=False, weight_decay=1e-4,
              label_smoothing=0.0, annihilation=True, augment=True, cutout=0, pipeline="torch", seed=0,
              eval_every=1, checkpoint_every=0)
PEAK_FRACTION = 0.3  # one-cycle: LR warms up for the first 30% of the epochs, then anneals
STATS_IMAGES = 256  # test images in the fixed batch for the per-layer statistics
# "Clearly higher": the deeper plain net must end at least this much above the shallow one (train error, 0..1).
# The residual pair has no slack: the deeper net must end at or below the shallow one.
PLAIN_MARGIN = 0.03


def model_name(family: str, depth: int) -> str:
    return f"{family}{depth}"


def depth_of(name: str) -> int:
    """plain56 -> 56, resnet110 -> 110."""
    for family in FAMILIES:
        if name.startswith(family) and name[len(family):].isdigit():
            return int(name[len(family):])
    raise DegradationError(f"'{name}' is not a plain/resnet CIFAR net")


def net_label(name: str) -> str:
    """plain56 -> 'plain-56', resnet20 -> 'ResNet-20' (the paper's spelling)."""
    for family in FAMILIES:
        if name.startswith(family) and name[len(family):].isdigit():
            return f"{'plain' if family == 'plain' else 'ResNet'}-{name[len(family):]}"
    return name


def suite_configs(suite: str | Suite = "cpu", *, epochs: int | None = None, subset: int | None = None,
                  test_subset: int | None = None, batch_size: int | None = None, depths=None,
                  include_110: bool = False, device: str = "auto", data: str | None = None, seed: int = 0,
                  zero_init: bool | None = None) -> list:
    """One ``TrainConfig`` per net, shallow to deep, plain before residual at each depth.

    ``seed`` sets the initial weights, the batch order and the augmentation draws (the training subset is
    the same for every seed); ``zero_init`` (default: the suite's) starts each residual branch's last BN at 0.
    """

    s = get_suite(suite)
    depths = tuple(sorted(set(int(d) for d in (depths or s.depths))))
    if include_110 and 110 not in depths:
        depths = depths + (110,)
    epochs = s.epochs if epochs is None else epochs
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise DegradationError("epochs must be a whole number ≥ 1")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise DegradationError("seed must be a whole number ≥ 0")
    zero_init = s.zero_init if zero_init is None else bool(zero_init)
    recipe = {**RECIPE, "augment": s.augment, "seed": seed}
    available = set(list_models())
    configs = []
    for depth in depths:
        for family in FAMILIES:
            name = model_name(family, depth)
            if name not in available:
                raise DegradationError(f"no model '{name}' in the registry (depths must be 6n+2 with a "
                                       f"registered net: 8, 14, 20, 32, 44, 56, 110)")
            options = {"width": s.width} if s.width != 16 else {}  # the paper's width: the options of old results
            if family == "resnet":
                options = {"shortcut": "A", **options, **({"zero_init_residual": True} if zero_init else {})}
            configs.append(TrainConfig(
                model=name, model_options=options,
                epochs=epochs, peak_epoch=round(max(PEAK_FRACTION * epochs, 0.5), 2),
                lr_max=s.lr_max, lr_min=s.lr_max / 10, batch_size=batch_size or s.batch_size,
                subset=s.subset if subset is None else (subset or None),
                test_subset=s.test_subset if test_subset is None else (test_subset or None),
                device=device, data=data, preset=f"degradation-{s.name}", **recipe))

    for cfg in configs:
        problems = cfg.validate()
        if problems:  # by TrainConfig field: the CLI names its own options (--batch-size)
            raise invalid(DegradationError, problems, "suite settings")
    return configs


def get_suite(suite: str | Suite) -> Suite:
    if isinstance(suite, Suite):
        return suite
    if suite not in SUITES:
        raise DegradationError(f"unknown suite '{suite}'; choose one of {', '.join(SUITES)}")
    return SUITES[suite]


# -- running a suite ------------------------------------------------------------------------------------


def results_dir(root: str | Path | None = None) -> Path:
    return Path(root) if root is not None else runs_dir() / "degradation"
