"""``python -m resnet_lab rf``: the receptive field of every layer, traced from the real graph.

NAME is a registry model (``resnet20``) or ``torchvision:vgg16`` / ``torchvision:resnet50`` / any torchvision
builder (built without weights: nothing is downloaded). With ``--json`` the last stdout line is a JSON list,
one object per layer.
"""

from __future__ import annotations

import argparse

from resnet_lab.cli.common import add_command, fail, positive_int, print_json
from resnet_lab.receptive_field import receptive_fields, RFError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_command(
        subparsers, "rf", json_help="print a JSON list (one object per layer) as the last line",
        summary="receptive field of every layer (largest and smallest over all paths)",
        description="Analytic receptive fields (Araujo et al., Distill 2019) for each layer of a model, traced "
                    "with torch.fx so residual branches count: rf_max over the longest path, rf_min over the "
                    "shortest.")
    p.add_argument("--model", required=True, metavar="NAME",
                   help="registry model (e.g. resnet20, custom_resnet) or torchvision:NAME (e.g. torchvision:vgg16)")
    p.add_argument("--input-size", type=positive_int, default=None, metavar="N",
                   help="image side in px (default 32; 224 for torchvision models)")
    p.add_argument("--all", action="store_true", help="also list layers that keep the RF (BN, ReLU, ...)")
    return p


def run(args) -> int:
    size = args.input_size or (224 if args.model.startswith("torchvision:") else 32)
    try:
        table = receptive_fields(args.model, size)
    except RFError as exc:
        fail(str(exc))
    if args.json:
        print_json(table.to_records())
        return 0
    rows = table.layers if args.all else [r for r in table.layers if r.geometric]
    name_w = max(12, *(len(r.name) for r in rows))
    print(f"{table.model} at {size}×{size} px: {len(table.layers)} traced layers"
          + ("" if args.all else f" ({len(rows)} that change the RF shown; --all for every layer)"))
    print(f"{'layer':<{name_w}} {'op':<7} {'k':>3} {'s':>3} {'p':>3} {'out':>9} {'jump':>5} "
          f"{'rf_max':>7} {'rf_min':>7} {'start':>6}")

    def v(pair):
        if pair is None:
            return "-"
        a, b = pair
        text = lambda x: str(int(x)) if float(x).is_integer() else f"{x:.1f}"  # noqa: E731
        return text(a) if a == b else f"{text(a)}x{text(b)}"

    for r in rows:
        out = f"{r.out_size[0]}×{r.out_size[1]}" if r.out_size else "-"
        flag = "  > image" if r.rf_max[0] > size else ""
        print(f"{r.name:<{name_w}} {r.op:<7} {v(r.kernel):>3} {v(r.stride):>3} {v(r.padding):>3} {out:>9} "
              f"{v(r.jump):>5} {v(r.rf_max):>7} {v(r.rf_min):>7} {v(r.start):>6}{flag}")
    final = table.final
    print(f"\nLast spatial layer '{final.name}': RF {v(final.rf_max)} px over its longest path, {v(final.rf_min)} px "
          f"over its shortest, units {v(final.jump)} px apart.")
    for note in table.notes:
        print("note:", note)
    return 0
