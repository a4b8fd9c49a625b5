"""The optimizer a run gets: Muon on the GPT blocks' matrices + AdamW on the rest, AdamW for a Hugging Face model."""

import json

import pytest
import torch

from hf_fixtures import save_tiny_model
from studio.model import GPT, model_config
from studio.models.hf import load_folder
from studio.optim import LR_SCALE, BatchedMuon, MasterWeightAdamW, MuonAdamW, make_optimizer
from studio.train import Trainer
from studio.train_config import MUON_LR_RATIO, TrainConfig, TrainingError, lr_at
from train_helpers import TEST_PRESET, losses, small_setup, write_dataset  # noqa: F401 (fixture)

CPU = torch.device("cpu")


def gpt() -> GPT:
    return GPT(model_config(TEST_PRESET, vocab_size=40))


def test_muon_steps_exactly_the_blocks_matrices_and_adamw_every_other_parameter():
    model = gpt()
    optimizer = make_optimizer(model, TrainConfig(), CPU)  # auto
    assert isinstance(optimizer, MuonAdamW)
    by_name = {id(p): name for name, p in model.named_parameters()}
    in_muon = {by_name[id(p)] for group in optimizer.muon.param_groups for p in group["params"]}
    in_adamw = {by_name[id(p)] for group in optimizer.adamw.param_groups for p in group["params"]}
    assert in_muon == {name for name, p in model.named_parameters() if name.startswith("blocks.") and p.dim() == 2}
    assert in_adamw == set(by_name.values()) - in_muon  # embeddings, head, norms, biases: every parameter once
    assert {"tok_emb.weight", "pos_emb.weight"} <= in_adamw
    assert any(p is model.lm_head.weight for group in optimizer.adamw.param_groups for p in group["params"])  # tied or not
    # the trainer sees one optimizer: every group, and one state for all
    assert optimizer.param_groups == optimizer.muon.param_groups + optimizer.adamw.param_groups
    assert optimizer.muon.state is optimizer.adamw.state is optimizer.state


def test_a_step_moves_both_halves_and_the_state_round_trips():
    torch.manual_seed(0)
    model = gpt()
    optimizer = make_optimizer(model, TrainConfig(), CPU)
    ids = torch.randint(0, 40, (2, 17))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model(ids[:, :-1], ids[:, 1:])[1].backward()
    optimizer.step()
    assert all(not torch.equal(p, before[name]) for name, p in model.named_parameters() if name.endswith("weight")), \
        "every weight, Muon's and AdamW's, moved"
    restored = make_optimizer(model, TrainConfig(), CPU)
    restored.load_state_dict(optimizer.state_dict())
    assert restored.muon.state is restored.state, "load_state_dict replaced the state: the halves point at it again"
    for group in restored.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state[p].items():
                assert torch.equal(torch.as_tensor(restored.state[p][key]), torch.as_tensor(value)), key


def test_the_schedule_gives_muon_its_own_lr(tmp_path):
    dataset = write_dataset(tmp_path / "data.jsonl")
    config = TrainConfig(preset=TEST_PRESET, dataset=str(dataset), out_dir=str(tmp_path / "run"), steps=5, batch_size=4,
                         lr=2e-3, muon_lr=0.03, warmup_steps=2, eval_every=100, save_every=0, device="cpu", bf16=False)
    trainer = Trainer(config)
    trainer.run()
    last = lr_at(5, config)
    assert [group["lr"] for group in trainer.optimizer.muon.param_groups] == [pytest.approx(last * 0.03 / 2e-3)]
    assert {group["lr"] for group in trainer.optimizer.adamw.param_groups} == {last}
    assert trainer.optimizer.muon.param_groups[0][LR_SCALE] == pytest.approx(15.0)


def test_without_muon_lr_the_lr_scales_both_halves():
    """A lower --lr for fine-tuning must not leave Muon's matrices at the from-scratch rate."""
    for lr in (6e-3, 1e-4):
        optimizer = make_optimizer(gpt(), TrainConfig(lr=lr), CPU)
        assert optimizer.muon.param_groups[0]["lr"] == pytest.approx(lr * MUON_LR_RATIO)
        assert {group["lr"] for group in optimizer.adamw.param_groups} == {lr}
    assert TrainConfig().muon_peak_lr == pytest.approx(0.01)


def test_a_hugging_face_model_gets_adamw_and_muon_on_it_is_one_line(tmp_path):
    model = load_folder(save_tiny_model("qwen2", tmp_path / "m", dtype=torch.bfloat16))
    assert isinstance(make_optimizer(model, TrainConfig(), CPU), MasterWeightAdamW)
    with pytest.raises(TrainingError, match="^optimizer muon trains the studio's own GPT; .*adamw"):
        make_optimizer(model, TrainConfig(optimizer="muon"), CPU)


def test_a_run_saved_before_the_optimizer_setting_resumes_with_adamw(tmp_path):
    """Its saved settings have no `optimizer`: it trained with AdamW, and its moments are AdamW's."""
    dataset = write_dataset(tmp_path / "data.jsonl")
    settings = dict(preset=TEST_PRESET, dataset=str(dataset), steps=6, batch_size=4, eval_every=100, save_every=3,
                    device="cpu", bf16=False, threads=1, optimizer="adamw")
    Trainer(TrainConfig(**settings, out_dir=str(tmp_path / "straight"))).run()
    Trainer(TrainConfig(**{**settings, "steps": 3}, out_dir=str(tmp_path / "old"))).run()
    config_file = tmp_path / "old" / "checkpoint" / "config.json"
    saved = json.loads(config_file.read_text())
    del saved["training"]["optimizer"]
    saved["training"]["steps"] = 6
    config_file.write_text(json.dumps(saved))
    resumed = Trainer(TrainConfig(resume=str(tmp_path / "old")))
    resumed.run()
    assert resumed.config.optimizer == "adamw"
    assert losses(tmp_path / "old") == losses(tmp_path / "straight")


@pytest.mark.parametrize("guarded", [False, True], ids=["alone", "found_inf 0"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_batched_muon_steps_exactly_as_torch_muon(weight_decay, guarded):
    """torch.optim.Muon is the oracle: matrices of several shapes (two of one shape, batched together), three steps;
    also with the trainer's device-side guard set to "all finite", which must not change the update."""
    shapes = [(48, 16), (16, 64), (48, 16), (16, 16), (64, 16)]
    start = [torch.randn(shape, generator=torch.Generator().manual_seed(i)) for i, shape in enumerate(shapes)]
    theirs, ours = ([torch.nn.Parameter(x.clone()) for x in start] for _ in range(2))
    options = dict(lr=0.02, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
    reference, batched = torch.optim.Muon(theirs, **options), BatchedMuon(ours, **options)
    if guarded:
        batched.found_inf = torch.tensor(0.0)
    generator = torch.Generator().manual_seed(7)
    for _ in range(3):
        for a, b in zip(theirs, ours):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        reference.step()
        batched.step()
    for a, b, x in zip(theirs, ours, start):
        assert not torch.equal(a, x)
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    assert all(torch.equal(batched.state[b]["momentum_buffer"], reference.state[a]["momentum_buffer"]) for a, b in zip(theirs, ours))
