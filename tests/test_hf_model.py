"""The Hugging Face adapter against transformers itself: logits, loss, greedy continuations, the cache."""

import pytest
import torch
import torch.nn.functional as F
from hf_fixtures import CONTEXT, FAMILIES, VOCAB, reference_model, save_tiny_model

from studio.masking import IGNORE
from studio.models.hf import ModelFolderError, load_folder
from studio.models.interface import LanguageModel
from studio.sampling import SamplingConfig, generate_ids


@pytest.fixture(scope="module", params=FAMILIES)
def saved(request, tmp_path_factory):
    return save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))


def test_logits_equal_transformers(saved):
    model, reference = load_folder(saved), reference_model(saved)
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))
    logits, loss = model(ids)
    assert loss is None
    torch.testing.assert_close(logits, reference(ids).logits, rtol=0, atol=1e-4)
    assert isinstance(model, LanguageModel)


def test_loss_is_the_masked_mean_over_trained_targets(saved):
    model = load_folder(saved)
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(2))
    targets = torch.roll(ids, -1, dims=1)
    targets[:, :5] = IGNORE  # a masked prompt
    targets[1, 9:] = IGNORE  # padding
    logits, loss = model(ids, targets)
    trained = targets != IGNORE
    expected = F.cross_entropy(logits[trained].float(), targets[trained])
    torch.testing.assert_close(loss, expected)
    _, per_token = model(ids, targets, reduction="none")
    assert per_token.shape == targets.shape and (per_token[~trained] == 0).all()
    torch.testing.assert_close(per_token[trained].mean(), expected)


def greedy_by_recompute(reference, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(reference(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def test_cached_greedy_generation_equals_transformers_recomputation(saved):
    model, reference = load_folder(saved), reference_model(saved)
    prompt = [5, 17, 42, 8, 33]
    ours = list(generate_ids(model, prompt, stop_ids=set(), sampling=SamplingConfig(max_new_tokens=20)))
    assert ours == greedy_by_recompute(reference, prompt, 20)
    assert len(set(ours)) > 3  # the continuation varies, so a wrong position or cache would show


def test_generation_slides_its_window_past_the_context(saved):
    model = load_folder(saved)
    tokens = list(generate_ids(model, [3] * (CONTEXT - 4), stop_ids=set(), sampling=SamplingConfig(max_new_tokens=12)))
    assert len(tokens) == 12


def test_context_and_counts(saved):
    model, reference = load_folder(saved), reference_model(saved)
    assert model.config.context_size == CONTEXT and model.config.vocab_size == VOCAB
    assert model.num_parameters() == reference.num_parameters()
    assert model.flops_per_token() > 6 * model.num_parameters(exclude_embeddings=True)
    model.set_context(16)
    assert model.config.context_size == 16
    with pytest.raises(ModelFolderError, match="outside what the model supports"):
        model.set_context(CONTEXT + 1)


def test_weights_stay_in_their_stored_dtype(tmp_path):
    model = load_folder(save_tiny_model("qwen2", tmp_path, dtype=torch.bfloat16))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config.dtype == "bfloat16"


def test_refuses_folders_it_cannot_use(tmp_path):
    with pytest.raises(ModelFolderError, match="no such folder"):
        load_folder(tmp_path / "absent")
    with pytest.raises(ModelFolderError, match="not a Hugging Face model folder"):
        load_folder(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ModelFolderError, match="pickle files are never loaded"):
        load_folder(tmp_path)
