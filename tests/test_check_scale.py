"""`studio check` at scale (issue 12, item 7): the streamed loader and the column-stored examples give exactly what
the whole-file, token-by-token way gave, and a record longer than any context costs memory bounded by the reader's
line limit, not by the record. The references below are the former implementations, kept as plain oracles."""

import json
import tracemalloc
from bisect import bisect_right
from pathlib import Path

import pytest
from ftfy.badness import is_bad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio import data, paths, safe_io
from studio.lint import conversation_texts, dataset_tokenizer, lint_dataset, looks_double_encoded
from studio.masking import build_example
from studio.templates import TEMPLATES, get_template

ROOT = Path(__file__).resolve().parents[1]
SHARED = sorted((ROOT.parent / "shared" / "data").glob("*.json*"))  # beside the main checkout, when there
FILES = sorted(paths.DATASETS_DIR.glob("*.jsonl")) + sorted((ROOT / "tests" / "data").glob("*.json*")) + SHARED


def whole_file_load(path: Path):
    """The former loader: read and decode the whole file, split it into lines, parse each line.
    (conversations, error messages), or None for a JSON array that does not parse."""
    text = path.read_bytes().decode("utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            records = [(f"{path}[{index}]", item, False) for index, item in enumerate(json.loads(text))]
        except json.JSONDecodeError:
            return None
    else:
        records = [(f"{path}:{number}", line, True) for number, line in enumerate(safe_io.json_lines(text), start=1) if line.strip()]
    conversations, errors = [], []
    for location, record, is_line in records:
        try:
            conversations += data.parse_record(json.loads(record) if is_line else record, location)
        except json.JSONDecodeError as error:
            errors.append(f"{location}: invalid JSON at column {error.colno}: {error.msg}")
        except data.RecordError as error:
            errors.append(str(error))
    return conversations, errors


def token_by_token(conversation, template, tokenizer, max_tokens, train_on_prompt):
    """The former tokenization: each token's role looked up from its own start, one tuple per token."""
    tokens, offset, previous_special = [], 0, False
    runs = []
    for segment in template.render(conversation):
        trained = segment.trained or train_on_prompt
        if segment.special is None and runs and runs[-1][0][-1].special is None and runs[-1][1] == trained:
            runs[-1][0].append(segment)
        else:
            runs.append(([segment], trained))
    for run, trained in runs:
        if run[0].special is not None:
            end = offset + len(run[0].text)
            tokens.append((tokenizer.special_id(run[0].special), offset, end, run[0].role, trained, run[0].special))
            offset, previous_special = end, True
            continue
        ends, total = [], 0
        for segment in run:
            total += len(segment.text)
            ends.append(total)
        text = "".join(segment.text for segment in run)
        encoding = tokenizer.encode(text) if offset == 0 else tokenizer.encode_continuation(text, previous_special)
        for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
            role = run[min(bisect_right(ends, start), len(run) - 1)].role
            tokens.append((token_id, offset + start, offset + end, role, trained, None))
            previous_special = False
        offset += total
    return tokens if max_tokens is None else tokens[:max_tokens], len(tokens)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_streamed_load_reads_what_the_whole_file_parse_read(path):
    result = data.load(path)
    assert (result.conversations, [str(e) for e in result.errors]) == whole_file_load(path)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_column_stored_examples_are_the_token_by_token_ones(path):
    conversations = data.load(path).conversations[::3]
    tokenizers = [dataset_tokenizer(kind, conversations, 400) for kind in ("char", "bpe")]
    for tokenizer in tokenizers:
        for name in TEMPLATES:
            template = get_template(name)
            for max_tokens, train_on_prompt in ((None, False), (48, False), (200, True)):
                for conversation in conversations:
                    expected, length = token_by_token(conversation, template, tokenizer, max_tokens, train_on_prompt)
                    example = build_example(conversation, template, tokenizer, max_tokens, train_on_prompt)
                    got = [(t.id, t.start, t.end, t.role, t.trained, t.special) for t in example.tokens]
                    assert got == expected and example.full_length == length
                    assert example.labels == [t[0] if t[4] else -100 for t in expected]
                    assert example.trained_count == sum(t[4] for t in expected[1:])
                    assert example.eos_trained == (sum(1 for t in expected if t[5] and t[3] == "assistant" and t[4])
                                                   == example.answers)


def test_check_on_the_bundled_and_shared_files_finds_what_it_found(capsys):
    """Lint flags against the former mojibake test (ftfy on every text, ASCII included)."""
    for path in FILES:
        conversations = data.load(path).conversations
        tokenizer = dataset_tokenizer("char", conversations)
        report = lint_dataset(conversations, get_template("comando"), tokenizer, 129, keep_parts=False)
        mojibake = ["mojibake" in flags for flags in report.flags]
        assert mojibake == [any(is_bad(text) for text in conversation_texts(c)) for c in conversations]


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(max_codepoint=127)))
def test_ascii_text_is_never_mojibake_to_ftfy(text):
    """lint skips ftfy on ASCII text (every one of ftfy's patterns needs a character outside ASCII)."""
    assert looks_double_encoded(text) is False and is_bad(text) is False


LINE_PIECES = st.sampled_from(['{"q": "a", "a": "b"}', '{"q": "ç\\u2028", "a": "é"}', '{"instruction": "x"}', "[1]", "{",
                               " ", "", "\u2028", "\x85", "\x0c", "\r"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.tuples(LINE_PIECES, st.sampled_from(["\n", "\r\n", "\r", ""])), min_size=1, max_size=6),
       tail=st.sampled_from([b"", b"\xff", b"\xc3"]))
def test_streamed_lines_split_and_fail_like_the_whole_text(tmp_path, pieces, tail):
    """Line numbers (breaks at \\n, \\r\\n, \\r), blank lines, bytes that are not UTF-8: as the whole text."""
    path = tmp_path / "d.jsonl"
    path.write_bytes("".join(piece + end for piece, end in pieces).encode() + tail)
    raw = path.read_bytes()
    try:
        expected = whole_file_load(path)
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        with pytest.raises(data.DatasetError) as refused:
            data.load(path)
        assert str(refused.value) == f"{path}:{line}: bytes that are not UTF-8 (byte {error.start}: 0x{raw[error.start]:02x})"
        return
    if expected is None or expected == ([], []):  # an array that does not parse, or nothing but blank lines
        with pytest.raises(data.DatasetError):
            data.load(path)
        return
    result = data.load(path)
    assert (result.conversations, [str(e) for e in result.errors]) == expected


def test_a_record_longer_than_any_context_is_refused_at_its_line_in_bounded_memory(tmp_path):
    """A 40 MB line is read in chunks (checked as UTF-8, counted) and never held: peak memory stays far below it,
    and the records after it load."""
    path = tmp_path / "d.jsonl"
    length = 10 * data.LINE_BYTES
    opening, closing = '{"instruction": "', '", "output": "y"}'
    with open(path, "w", encoding="utf-8") as file:
        file.write('{"instruction": "antes", "output": "ok"}\n')
        file.write(opening + "é" * length + closing + "\n")
        file.write('{"instruction": "depois", "output": "ok"}\n')
    tracemalloc.start()
    try:
        result = data.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (error,) = result.errors
    assert error.location == f"{path}:2" and f"{len(opening) + length + len(closing):,} characters, more than any context holds" in error.problem
    assert [c.first_instruction for c in result.conversations] == ["antes", "depois"]
    assert peak < 4 * data.LINE_BYTES < length / 2


def test_a_long_record_within_the_limit_keeps_only_a_context_of_tokens(tmp_path):
    """A record of 200 000 characters checked at a 256-token context: its example stores 257 ids, counts the rest,
    and linting it takes a few bytes per character (an object per token took ~150)."""
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"instruction": "resuma", "output": "palavra " * 25_000}) + "\n", encoding="utf-8")
    conversations = data.load(path).conversations
    tokenizer = dataset_tokenizer("char", conversations)
    tracemalloc.start()
    try:
        report = lint_dataset(conversations, get_template("comando"), tokenizer, 257, keep_parts=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (example,) = report.parts[0]
    assert len(example.ids) == 257 and example.full_length > 200_000 and example.response_truncated
    assert report.flags == [["eos-not-trained", "response-truncated"]]
    assert peak < 20 * 200_000
