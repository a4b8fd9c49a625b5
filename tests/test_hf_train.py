"""The trainer on a Hugging Face model: the same loop, the optimizer on bf16 weights, an exact resume."""

import shutil

import torch

from hf_fixtures import save_tiny_model
from studio import checkpoint
from studio.metrics import Metrics
from studio.models.hf import load_folder
from studio.optim import MasterWeightAdamW, make_optimizer
from studio.tokenizer import train_tokenizer
from studio.train import Trainer
from studio.train_config import TrainConfig
from train_helpers import TEST_PRESET, losses, small_setup, write_dataset  # noqa: F401 (fixture)


def hf_checkpoint(tmp_path, family="llama", dtype=torch.float32):
    """An HF model with a studio char tokenizer in a family "hf" checkpoint (the model's own tokenizer is
    studio.models.hf_tokenizer's; any tokenizer of the model's vocabulary will do for the loop)."""
    tokenizer = train_tokenizer("char", ["diga numero ok"])
    model = load_folder(save_tiny_model(family, tmp_path / f"{family}-folder", dtype=dtype, vocab_size=tokenizer.vocab_size))
    return checkpoint.save(tmp_path / f"{family}-ck", model, tokenizer, {"template": "chatml", "stage": "pretrain", "step": 0, "parent": None})


def config(tmp_path, source, name="run", **overrides) -> TrainConfig:
    settings = dict(preset=TEST_PRESET, dataset=str(write_dataset(tmp_path / "data.jsonl")), init_from=str(source),
                    out_dir=str(tmp_path / name), steps=12, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=10,
                    save_every=0, device="cpu", bf16=False, context_size=48)
    return TrainConfig(**{**settings, **overrides})


def test_sft_of_an_hf_model_lowers_the_loss_and_saves_an_hf_checkpoint(tmp_path):
    trainer = Trainer(config(tmp_path, hf_checkpoint(tmp_path)))
    path = trainer.run()
    curve = [loss for _, loss in losses(tmp_path / "run")]
    assert len(curve) == 12 and sum(curve[-3:]) / 3 < curve[0] - 1.0
    saved = checkpoint.load(path)
    assert saved.config["family"] == "hf" and saved.config["template"] == "chatml"  # the source's template
    assert saved.model.config.context_size == 48 and saved.config["model"]["model_type"] == "llama"
    events = trainer.metrics.snapshot().events
    assert any("loading the weights" in text for text in events)


class CopyCheckpointAt(Metrics):
    def __init__(self, step: int, copy_to):
        super().__init__()
        self.step, self.copy_to, self.trainer = step, copy_to, None

    def record_checkpoint(self, path):
        super().record_checkpoint(path)
        if self.trainer.step == self.step:
            shutil.copytree(path, self.copy_to)


def test_resume_of_a_bf16_hf_run_repeats_the_uninterrupted_losses(tmp_path):
    metrics = CopyCheckpointAt(3, tmp_path / "at3")
    # a pinned thread count: bit-for-bit needs the same one (a measured count may differ, and sums round differently)
    trainer = Trainer(config(tmp_path, hf_checkpoint(tmp_path, "qwen2", torch.bfloat16), steps=6, save_every=3, threads=1), metrics)
    metrics.trainer = trainer
    trainer.run()
    Trainer(TrainConfig(resume=str(tmp_path / "at3"), out_dir=str(tmp_path / "resumed"))).run()
    assert losses(tmp_path / "resumed") == losses(tmp_path / "run")[3:]  # the fp32 master weights were restored


def test_bf16_weights_stay_bf16_and_learn_through_fp32_master_weights(tmp_path):
    model = load_folder(save_tiny_model("qwen2", tmp_path / "m", dtype=torch.bfloat16)).train()
    optimizer = make_optimizer(model, TrainConfig(lr=1e-4), device=torch.device("cpu"))  # auto: adamw for a Hugging Face model
    assert isinstance(optimizer, MasterWeightAdamW)
    before = [p.detach().clone() for p in model.parameters()]
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        model(ids[:, :-1], ids[:, 1:])[1].backward()
        optimizer.step()
        optimizer.zero_grad()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    masters = optimizer.state_dict()["master_weights"]  # in param_groups order
    assert {m.dtype for m in masters} == {torch.float32}
    params = [p for group in optimizer.model_params for p in group]
    before = [before[i] for i in [next(j for j, q in enumerate(model.parameters()) if q is p) for p in params]]
    # lr 1e-4 moves a weight by ~1e-4, below bf16's resolution for many weights (1/128 at 1.0): AdamW on the
    # bf16 weights would lose those updates; the fp32 copies keep every one, and the model gets them rounded
    assert all(not torch.equal(m, b.float()) for m, b in zip(masters, before))
    assert all(torch.equal(p, m.to(torch.bfloat16)) for p, m in zip(params, masters))
