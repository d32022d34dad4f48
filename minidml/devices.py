"""Which device a run trains and evaluates on."""

from __future__ import annotations

import os

import torch

from .errors import MinidmlError


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, then Apple's MPS, else the CPU. Under ``torchrun`` every
    CUDA device means the rank's own GPU, ``cuda:LOCAL_RANK``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("mps") and not torch.backends.mps.is_available():
        raise MinidmlError(f"--device {name}: Apple's MPS is not available here; use --device "
                           "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MinidmlError(f"--device {name}: CUDA is not available here; use --device cpu")
    if name.startswith("cuda") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # a GPU per rank
    try:
        return torch.device(name)
    except (RuntimeError, ValueError):
        raise MinidmlError(f"--device {name}: not a device; use auto, cpu, cuda, cuda:N or "
                           "mps") from None
