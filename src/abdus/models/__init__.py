"""The multi-task network of the paper (section 2.2), its ablation variants and the PatchGAN.

``build_model(name, **options)`` builds "mgcn_r" (the proposed system), "mgcn", "mfcn", "sfcn"
or "stl"; ``build_discriminator(**options)`` the adversarial PatchGAN. See ``factory`` for the
variants and their outputs.
"""

from __future__ import annotations

from abdus.models.discriminator import (
    DiscriminatorConfig,
    PatchDiscriminator,
    build_discriminator,
    discriminator_input,
    mask_absent,
    receptive_field,
)
from abdus.models.encoder import load_imagenet_weights
from abdus.models.factory import (
    VARIANTS,
    ModelConfig,
    build_model,
    build_model_from_descriptor,
    count_parameters,
    model_descriptor,
    model_size_mb,
)

__all__ = [
    "VARIANTS",
    "DiscriminatorConfig",
    "ModelConfig",
    "PatchDiscriminator",
    "build_discriminator",
    "build_model",
    "build_model_from_descriptor",
    "count_parameters",
    "discriminator_input",
    "load_imagenet_weights",
    "mask_absent",
    "model_descriptor",
    "model_size_mb",
    "receptive_field",
]
