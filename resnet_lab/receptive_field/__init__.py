"""Receptive fields: the analytic one, traced from the real graph, and the effective one, measured with gradients.

Analytic RF (Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019).
Along one axis a layer with kernel k, stride s, padding p and dilation d (effective kernel k' = d(k-1)+1) maps
feature-map unit i to the input units [i*s - p, i*s - p + k' - 1]. Composing layers, each feature map is
described in *input pixel* coordinates by

    jump j   = product of the strides so far (distance in input px between neighbouring units),
    rf r     = r_in + (k' - 1) * j_in,
    lo / hi  = first / last input pixel that unit 0 can see (lo may be negative: that part is padding);
               unit i sees [lo + i*j, hi + i*j], and the RF centre ("start") is (lo + hi) / 2.

A ResNet is not a chain: at every ``x + F(x)`` (and every concatenation) paths of different depth meet. We
track, per node, the largest-RF path and the smallest-RF path (r and lo of each) and the union box over all
paths, so a node reports ``rf_max`` and ``rf_min``. Counting the paths themselves would explode (2^blocks);
max/min/union are exact under the merge rule because every layer transforms all paths the same monotone way.
Where branches arrive with different jumps the graph is "not aligned" (Distill's library refuses it); we keep
going with the coarser jump and say so in the layer's note.

The graph comes from ``torch.fx`` (so branches are seen as they are, not guessed from module order); feature-map
sizes come from running the traced graph once on a zero image in eval mode. Submodules fx cannot trace (data-
dependent Python control flow) become opaque leaves whose geometry is estimated from input-gradient support.

Effective RF (Luo, Li, Urtasun & Zemel 2016, "Understanding the Effective Receptive Field in Deep CNNs"): the
gradient of one output unit (all channels) w.r.t. the input, |.| averaged over a batch of real images. It is
roughly Gaussian and much smaller than the analytic box.
"""

from __future__ import annotations

from resnet_lab.receptive_field.analysis import _TABLES, receptive_fields
from resnet_lab.receptive_field.effective import effective_rf, erf_extent
from resnet_lab.receptive_field.table import LayerRF, RFError, RFTable
from resnet_lab.receptive_field.trace import load_model, TORCHVISION_MODELS

__all__ = [
    "_TABLES",
    "effective_rf",
    "erf_extent",
    "LayerRF",
    "load_model",
    "receptive_fields",
    "RFError",
    "RFTable",
    "TORCHVISION_MODELS",
]
