"""The trainer's optimizer: Muon + AdamW for the studio's GPT, AdamW (fp32 master weights over bf16) for a Hugging Face model.

Muon (torch.optim.Muon, Jordan et al. 2024; what the nanoGPT speedruns train hidden layers with) steps the transformer
blocks' weight matrices with an orthogonalised momentum: every direction of a matrix moves at the same rate, where
AdamW's per-element steps let a few directions dominate. Embeddings, the head, norms and biases are not hidden
matrices and stay with AdamW. On the bundled data the default SFT run memorises 99 % of its trained answers in 500
steps with Muon, where AdamW needed 2000 (800 AdamW steps: 8 %), and the held-out loss is no worse
(docs/PERFORMANCE.md, "Issue 13, second pass").

An imported Hugging Face model keeps the dtype it was stored in (bf16 for most: half the memory, and bf16
matmuls on GPUs and AMX CPUs). AdamW straight on bf16 weights loses most updates: bf16 has 8 bits of
mantissa, so adding lr * update (~1e-5 of a weight) rounds back to the same weight. Here the optimizer
steps fp32 copies of those weights (and keeps its moments in fp32) and writes them back rounded to the
model's dtype after each step: the usual mixed-precision recipe. It costs 4 bytes per parameter more than
stepping the bf16 weights (fp32 copies), half what keeping the whole model in fp32 would cost for weights
and gradients. The copies are saved with the optimizer state, so a resume continues from them exactly.
Such a model was pretrained with AdamW, and keeps it: fine-tuning with another optimizer than the pretraining
one is reported to lose Muon's edge (Liu et al. 2025, "Muon is Scalable for LLM Training").
"""

from __future__ import annotations

import torch

from studio.devices import fused_adamw_supported, use_bf16
from studio.model import GPT
from studio.train_config import TrainConfig, TrainingError

LOW_PRECISION = (torch.bfloat16, torch.float16)
MASTER_KEY = "master_weights"  # in state_dict(): the fp32 copies, in param_groups order
BETAS = (0.9, 0.95)
LR_SCALE = "lr_scale"  # in a param group: its lr is the schedule's lr times this (Muon's lr is not AdamW's)


def optimizer_kind(requested: str, model: torch.nn.Module) -> str:
    """"muon" or "adamw" for `requested` ("auto" | "muon" | "adamw"); a request the model cannot take is one line."""
    if requested == "auto":
        return "muon" if isinstance(model, GPT) else "adamw"
    if requested == "muon" and not isinstance(model, GPT):
        raise TrainingError("optimizer muon trains the studio's own GPT; a Hugging Face model trains with adamw (or auto)")
    return requested


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer_kind(config.optimizer, model) == "muon":
        return MuonAdamW(model, config.lr, config.muon_peak_lr, config.weight_decay, device)
    groups = adamw_groups(params, config.weight_decay)
    if any(p.dtype in LOW_PRECISION for p in params):
        return MasterWeightAdamW(groups, lr=config.lr, betas=BETAS)
    fused = fused_adamw_supported(device) or None  # None: torch's own choice (foreach)
    return torch.optim.AdamW(groups, lr=config.lr, betas=BETAS, fused=fused)


def adamw_groups(params: list[torch.Tensor], weight_decay: float) -> list[dict]:
    # nanoGPT: decay the matmul and embedding weights, not biases and norm gains
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the GPT blocks' weight matrices, AdamW on every other parameter, as one optimizer to the trainer:
    its param_groups are the two inner optimizers' groups (Muon's first) and its state their shared state, so the
    lr schedule, state_dict() and a resume see every parameter, like a single torch optimizer.

    Where AdamW is fused (CUDA, CPU) this one says so too (defaults["fused"]) and takes the trainer's `found_inf` like
    it: both halves then skip a non-finite update on the device, so on CUDA the trainer reads the loss every few
    steps rather than waiting for the GPU at every one."""

    def __init__(self, model: GPT, lr: float, muon_lr: float, weight_decay: float, device: torch.device):
        matrices = [p for p in model.blocks.parameters() if p.requires_grad and p.dim() == 2]
        in_muon = {id(p) for p in matrices}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in in_muon]
        # match_rms_adamw: Muon's step scaled to the size of an AdamW step, so its lr reads like one
        self.muon = BatchedMuon(matrices, lr=muon_lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw",
                                orthogonalise_in=torch.bfloat16 if use_bf16(None, device) else torch.float32)
        self.adamw = torch.optim.AdamW(adamw_groups(rest, weight_decay), lr=lr, betas=BETAS,
                                       fused=fused_adamw_supported(device) or None)
        self.muon_lr_scale = muon_lr / lr
        super().__init__(self.muon.param_groups + self.adamw.param_groups, {})
        self.defaults["fused"] = bool(self.adamw.defaults["fused"])  # set after the groups: not copied into Muon's
        self._share()

    def _share(self) -> None:
        """Point the inner optimizers at this one's groups and state (load_state_dict replaces both)."""
        split = len(self.muon.param_groups)
        self.muon.param_groups, self.adamw.param_groups = self.param_groups[:split], self.param_groups[split:]
        for group in self.muon.param_groups:
            group[LR_SCALE] = self.muon_lr_scale
        self.muon.state = self.adamw.state = self.state

    @torch.no_grad()
    def step(self, closure=None):
        self.muon.found_inf = self.adamw.found_inf = getattr(self, "found_inf", None)
        self.muon.step()
        self.adamw.step()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._share()  # this run's Muon lr: a resume may set another


class BatchedMuon(torch.optim.Muon):
    """torch.optim.Muon's update (the same momentum, Newton-Schulz iteration, coefficients and lr adjustment; its
    settings, state and state_dict), computed for all matrices of one shape at once. torch steps the matrices one by
    one: ~25 small ops each, 12 matrices in the tiny GPT, 9.9 ms a step on 2 cores where AdamW takes 0.5 ms and a
    whole forward + backward at config (a) 12.5 ms. Batched: a few ops per shape (docs/PERFORMANCE.md).

    torch orthogonalises in bf16; here in `orthogonalise_in`: bf16 where matmuls run it natively (CUDA, AMX CPUs),
    fp32 on a CPU that would emulate it (slower there, and more precise)."""

    def __init__(self, params, *, orthogonalise_in: torch.dtype = torch.bfloat16, **options):
        super().__init__(params, **options)
        self.orthogonalise_in = orthogonalise_in

    @torch.no_grad()
    def step(self, closure=None):
        # found_inf: a 0-d tensor on the device that the trainer sets, as fused AdamW takes it; where it is 1 the whole
        # update is skipped (momentum and weight decay too), decided on the device without reading it back
        found_inf = getattr(self, "found_inf", None)
        skip = None if found_inf is None else found_inf.bool()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if skip is not None:
                grads = [torch.where(skip, 0.0, g) for g in grads]  # a NaN must not reach the buffers, not even as NaN x 0
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            buffers = [self.state[p]["momentum_buffer"] for p in params]
            momentum, lr = group["momentum"], group["lr"]
            if skip is None:
                torch._foreach_lerp_(buffers, grads, 1 - momentum)
            else:  # a weight per tensor: a 0-d tensor alone would be taken as a Python number, read from the device
                torch._foreach_lerp_(buffers, grads, [torch.where(skip, 0.0, 1 - momentum)] * len(buffers))
            updates = torch._foreach_lerp(grads, buffers, momentum) if group["nesterov"] else buffers
            if group["weight_decay"]:
                decay = 1 - lr * group["weight_decay"]
                torch._foreach_mul_(params, decay if skip is None else torch.where(skip, 1.0, decay))
            by_shape: dict[torch.Size, list[int]] = {}
            for index, param in enumerate(params):
                by_shape.setdefault(param.shape, []).append(index)
            for shape, indices in by_shape.items():
                orthogonal = self._orthogonalise(torch.stack([updates[i] for i in indices]), group)
                if skip is not None:
                    orthogonal = torch.where(skip, 0.0, orthogonal)
                adjusted = torch.optim._muon._adjust_lr(lr, group["adjust_lr_fn"], shape)
                torch._foreach_add_([params[i] for i in indices], list(orthogonal.to(params[indices[0]].dtype).unbind()),
                                    alpha=-adjusted)

    def _orthogonalise(self, matrices: torch.Tensor, group: dict) -> torch.Tensor:
        """torch.optim._muon._zeropower_via_newtonschulz over a [n, rows, cols] stack."""
        a, b, c = group["ns_coefficients"]
        x = matrices.to(self.orthogonalise_in)
        tall = x.size(1) > x.size(2)
        if tall:
            x = x.mT
        x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=group["eps"])  # each spectral norm at most 1
        for _ in range(group["ns_steps"]):
            gram = x @ x.mT
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        return x.mT if tall else x


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
