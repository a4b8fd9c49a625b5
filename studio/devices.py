"""Where a model runs and in which precision: one choice for training, chat and the command line."""

from __future__ import annotations

from pathlib import Path

import torch

from studio.train_config import TrainingError


def best_device() -> str:
    """The GPU when torch sees one, else the CPU: what "auto" means everywhere a model is loaded."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device(best_device())
    if name == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise TrainingError(f"CUDA is not available ({why}); use --device cpu or --device auto")
    return torch.device(name)


def fused_adamw_supported(device: torch.device) -> bool:
    """Fused AdamW runs on this device type: one kernel per step, and it can skip a non-finite update on the
    device (found_inf, as GradScaler uses it). Asked of torch, not learnt by catching its error."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # a torch without the registry: the plain foreach AdamW
        return False
    return device.type in _get_fused_kernels_supported_devices()


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: bf16 matmuls run in hardware (training measured 1.5-2.2x faster than fp32
    on a 2-core EPYC, docs/PERFORMANCE.md); without them bf16 is emulated and slower than fp32."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # not Linux: stay in fp32
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_bf16(setting: bool | None, device: torch.device) -> bool:
    if setting is not None:
        return setting
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
