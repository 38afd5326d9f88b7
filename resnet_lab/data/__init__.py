"""CIFAR-10-shaped datasets as uint8 arrays: torchvision's CIFAR-10, or class folders (a dir or a tar archive).

Sources (``load_dataset(data=...)``, else env ``RESNET_LAB_DATA``, else ``cifar10``):

* ``cifar10``: torchvision downloads the original CIFAR-10 once into ``cache_dir()/"torchvision"``.
* a directory or ``.tar.gz``/``.tgz``/``.tar`` archive laid out as ``train/<class>/*.{png,jpg,jpeg}`` and
  ``test/<class>/*`` (optionally wrapped in one top-level folder). Images are decoded once into an ``.npz``
  in ``cache_dir()`` keyed by the source's absolute path, size and mtime; later loads read that file.

Every array is the full split in a stable order (class, then file name); ``Dataset.subset`` picks a
class-balanced, seeded part of it and remembers where each image came from (``train_index``/``test_index``).
The arrays of a loaded dataset are shared through an in-process memo: treat them as read-only.

Only stdlib, numpy and PIL are imported here at module level; torchvision is imported for ``cifar10`` only.
"""

from __future__ import annotations

from resnet_lab.data.cache import decode_count
from resnet_lab.data.dataset import (
    CLASSES,
    DataError,
    Dataset,
    DataWarning,
    EXAMPLE_ARCHIVE,
    EXPECTED_LAYOUT,
    IMAGE_EXTENSIONS,
    IMAGE_SIZE,
    IMBALANCE_RATIO,
    limits_text,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    Progress,
    safe_text,
)
from resnet_lab.data.sources import (
    CIFAR10_DOWNLOAD_BYTES,
    clear_memory_cache,
    dataset_status,
    is_decoded,
    load_dataset,
    undecoded_bytes,
)
from resnet_lab.data.synthetic import archive_class_folders, make_class_folder_dataset

__all__ = [
    "archive_class_folders",
    "CIFAR10_DOWNLOAD_BYTES",
    "CLASSES",
    "clear_memory_cache",
    "DataError",
    "Dataset",
    "dataset_status",
    "DataWarning",
    "decode_count",
    "EXAMPLE_ARCHIVE",
    "EXPECTED_LAYOUT",
    "IMAGE_EXTENSIONS",
    "IMAGE_SIZE",
    "IMBALANCE_RATIO",
    "is_decoded",
    "limits_text",
    "load_dataset",
    "make_class_folder_dataset",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "Progress",
    "safe_text",
    "undecoded_bytes",
]
