from dataclasses import replace

import pytest
import torch

from studio.batching import WIDTH_MULTIPLE, PretrainBatches, SFTBatches, collate, example_rows, sft_eval_batches
from studio.data import Conversation, Turn
from studio.masking import IGNORE, build_example
from studio.templates import get_template
from studio.tokenizer import train_tokenizer

PAD = 0


def test_collate_shifts_and_never_trains_padding():
    long = (torch.tensor([10, 11, 12, 13, 14]), torch.tensor([IGNORE, IGNORE, 12, 13, 14]))
    short = (torch.tensor([20, 21, 22]), torch.tensor([IGNORE, 21, 22]))
    batch = collate([long, short], PAD)
    assert batch.inputs.tolist() == [[10, 11, 12, 13], [20, 21, PAD, PAD]]
    # targets[t] is the label of the token after inputs[t]; padding is IGNORE
    assert batch.targets.tolist() == [[IGNORE, 12, 13, 14], [21, 22, IGNORE, IGNORE]]
    assert batch.tokens == 6
    assert batch.trained_tokens == 5
    # widths round up to a multiple (fewer distinct shapes) but never past the context
    assert collate([long, short], PAD, multiple=16).inputs.shape == (2, 16)
    assert collate([long, short], PAD, multiple=16, max_width=6).inputs.shape == (2, 6)
    assert (collate([long, short], PAD, multiple=16).targets[:, 4:] == IGNORE).all()


def conversations(n: int) -> list[Conversation]:
    return [Conversation((Turn("user", f"pergunta {i}" + "?" * (i % 7)), Turn("assistant", f"resposta {i}" + "!" * i)))
            for i in range(n)]


def examples(n: int):
    convs = conversations(n)
    tokenizer = train_tokenizer("char", [t.text for c in convs for t in c.turns])
    return [build_example(c, get_template("comando"), tokenizer) for c in convs], tokenizer


def test_real_examples_train_only_answer_tokens_and_their_successors():
    exs, tokenizer = examples(5)
    batch = collate(example_rows(exs), tokenizer.pad_id)
    for row, ex in enumerate(exs):
        n = len(ex.ids) - 1
        assert batch.inputs[row, :n].tolist() == ex.ids[:-1]
        assert batch.targets[row, :n].tolist() == ex.labels[1:]
        assert (batch.targets[row, n:] == IGNORE).all()
        trained = [t for t in batch.targets[row, :n].tolist() if t != IGNORE]
        assert trained[-1] == tokenizer.eos_id  # the answer's end token is trained
    assert batch.trained_tokens == sum(ex.trained_count for ex in exs)


def test_a_batch_without_a_trained_token_is_refused_where_it_is_built():
    exs, tokenizer = examples(4)
    for ex in exs:
        ex.spans = [replace(span, trained=False) for span in ex.spans]
    batches = SFTBatches(exs, batch_size=4, pad_id=tokenizer.pad_id, seed=3, context_size=64)
    with pytest.raises(ValueError, match="step 1 has no trained token"):
        batches.get(1)


def test_sft_batches_cover_each_example_once_per_epoch_and_are_seeded():
    exs, tokenizer = examples(37)
    batches = SFTBatches(exs, batch_size=4, pad_id=tokenizer.pad_id, seed=3, context_size=64)
    assert batches.batches_per_epoch == 10
    for epoch in range(2):
        seen = sorted(i for batch in batches.epoch_order(epoch) for i in batch)
        assert seen == list(range(37))
    assert batches.epoch_order(0) != batches.epoch_order(1)
    again = SFTBatches(exs, batch_size=4, pad_id=tokenizer.pad_id, seed=3, context_size=64)
    # random access (a resumed run) gives the batches of sequential access
    for step in (17, 3, 25, 3):
        assert torch.equal(again.get(step).inputs, batches.get(step).inputs)
    other = SFTBatches(exs, batch_size=4, pad_id=tokenizer.pad_id, seed=4, context_size=64)
    assert other.epoch_order(0) != batches.epoch_order(0)


def test_length_buckets_pad_less_than_random_batches():
    exs, tokenizer = examples(64)
    batches = SFTBatches(exs, batch_size=8, pad_id=tokenizer.pad_id, seed=0, context_size=64)
    bucketed = [batches.get(step) for step in range(1, batches.batches_per_epoch + 1)]
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = [collate(example_rows([exs[i] for i in order[k:k + 8]]), tokenizer.pad_id, WIDTH_MULTIPLE, 64) for k in range(0, 64, 8)]
    def padding(bs):
        return sum(b.inputs.numel() - b.tokens for b in bs)
    assert sum(b.tokens for b in bucketed) == sum(b.tokens for b in shuffled)
    assert padding(bucketed) < padding(shuffled) / 2


def test_eval_batches_hold_every_example():
    exs, tokenizer = examples(9)
    batches = sft_eval_batches(exs, 4, tokenizer.pad_id, 64)
    assert sum(b.trained_tokens for b in batches) == sum(ex.trained_count for ex in exs)


def test_pretrain_windows_train_every_token_and_replay_by_step():
    tokens = torch.arange(100) % 37
    batches = PretrainBatches(tokens, context_size=8, batch_size=3, seed=1)
    batch = batches.get(5)
    assert batch.inputs.shape == (3, 8)
    assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    assert batch.trained_tokens == batch.tokens == 24
    assert torch.equal(PretrainBatches(tokens, 8, 3, seed=1).get(5).inputs, batch.inputs)
    assert not torch.equal(batches.get(6).inputs, batch.inputs)
