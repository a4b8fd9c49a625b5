"""The trainer's optimizer: AdamW, with fp32 master weights when the model's weights are bf16 or fp16.

An imported Hugging Face model keeps the dtype it was stored in (bf16 for most: half the memory, and bf16
matmuls on GPUs and AMX CPUs). AdamW straight on bf16 weights loses most updates: bf16 has 8 bits of
mantissa, so adding lr * update (~1e-5 of a weight) rounds back to the same weight. Here the optimizer
steps fp32 copies of those weights (and keeps its moments in fp32) and writes them back rounded to the
model's dtype after each step: the usual mixed-precision recipe. It costs 4 bytes per parameter more than
stepping the bf16 weights (fp32 copies), half what keeping the whole model in fp32 would cost for weights
and gradients. The copies are saved with the optimizer state, so a resume continues from them exactly.
"""

from __future__ import annotations

import torch

from studio.devices import fused_adamw_supported

LOW_PRECISION = (torch.bfloat16, torch.float16)
MASTER_KEY = "master_weights"  # in state_dict(): the fp32 copies, in param_groups order


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    # nanoGPT: decay the matmul and embedding weights, not biases and norm gains
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    options = {"lr": lr, "betas": (0.9, 0.95)}
    if any(p.dtype in LOW_PRECISION for p in params):
        return MasterWeightAdamW(groups, **options)
    fused = fused_adamw_supported(device) or None  # None: torch's own choice (foreach)
    return torch.optim.AdamW(groups, **options, fused=fused)


class MasterWeightAdamW(torch.optim.AdamW):
    """AdamW over fp32 copies of the model's parameters: step() takes the model's gradients, updates the
    copies and writes them back into the model's parameters in their own dtype."""

    def __init__(self, groups: list[dict], **options):
        self.model_params = [list(group["params"]) for group in groups]
        masters = [{**group, "params": [p.detach().float().clone() for p in group["params"]]} for group in groups]
        super().__init__(masters, **options)

    def _pairs(self):
        for group, model_params in zip(self.param_groups, self.model_params):
            yield from zip(group["params"], model_params)

    @torch.no_grad()
    def step(self, closure=None):
        for master, param in self._pairs():
            master.grad = None if param.grad is None else param.grad.float()
        loss = super().step(closure)
        for master, param in self._pairs():
            param.copy_(master)
            master.grad = None  # the fp32 gradient copy is not kept between steps
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for _, param in self._pairs():
            param.grad = None
        super().zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return {**super().state_dict(), MASTER_KEY: [master.detach() for master, _ in self._pairs()]}

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        saved = state_dict.pop(MASTER_KEY, None)
        super().load_state_dict(state_dict)
        if saved is not None:
            for (master, param), value in zip(self._pairs(), saved):
                master.copy_(value)
                param.copy_(master)
