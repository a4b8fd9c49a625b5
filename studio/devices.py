"""Where a model runs and in which precision: one choice for training, chat and the command line."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

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


# On CPU in bf16, batch widths from this one up train faster with the flash-attention kernel, narrower ones with
# the plain-matmul (math) attention. Measured forward + backward, bf16, head_dim 32, 1 thread, 2-core Xeon with AMX
# (docs/PERFORMANCE.md): at 4 x 4 heads math 2.6 ms vs flash 5.4 ms at width 128, 7.5 vs 9.9 ms the other way at
# 256; at 16 x 8 heads math wins up to 176 (51 vs 64 ms), flash from 192 (40 vs 55 ms; 62 vs 129 ms at 256).
CPU_FLASH_FROM_WIDTH = 192


def training_precision(device: torch.device, bf16: bool, width: int) -> ExitStack:
    """Autocast, plus on CPU in bf16 the attention kernel that is faster for rows `width` tokens wide: the
    plain-matmul attention for short rows (there the CPU flash kernel made whole tiny-model steps 1.4x slower),
    flash attention for long ones (there the math kernel's fp32 softmax and masked-row guard cost more).
    Only the training thread uses it: sdpa_kernel flips process-wide flags."""
    stack = ExitStack()
    stack.enter_context(autocast(device, bf16))
    if bf16 and device.type == "cpu":
        stack.enter_context(sdpa_kernel(SDPBackend.MATH if width < CPU_FLASH_FROM_WIDTH else SDPBackend.FLASH_ATTENTION))
    return stack
