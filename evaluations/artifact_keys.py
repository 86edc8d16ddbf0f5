"""What the artifacts' cache keys are made of: an architecture's name as keys spell it, and content hashes of a
model's weights and of a data set."""
from __future__ import annotations

import hashlib

import numpy as np
from torch import nn

from mi_art.data import MIDataset
from mi_art.models import RENAMED_ARCHITECTURES
from mi_art.utils import EstimatorModule


def _key_name(arch: str) -> str:
    """An architecture's name as artifacts' cache keys spell it: a renamed one under its earlier name
    (``efficientnet_b0``), so that models cached before the rename are found."""
    return RENAMED_ARCHITECTURES.old(arch)


def model_fingerprint(model: nn.Module) -> str:
    """A content hash of a model's parameters and buffers; for an :class:`~mi_art.utils.EstimatorModule`,
    of the wrapped model and of its estimator's preprocessing, clip values and layout too."""
    h = hashlib.sha1()
    if isinstance(model, EstimatorModule):
        if model.estimator is not None:
            e = model.estimator
            h.update(repr((e.preprocessing, e.clip_values, e.channels_first, model.output_index)).encode())
        model = model.model
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def data_fingerprint(data: MIDataset) -> str:
    """A content hash of a dataset's three splits (images, labels) and identity names."""
    h = hashlib.sha256()
    for split in (data.private_train, data.private_test, data.public):
        for arr in (split.x, split.y):
            arr = np.ascontiguousarray(arr)
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(arr.tobytes())
    h.update(repr((data.private_identities, data.public_identities)).encode())
    return h.hexdigest()[:16]
