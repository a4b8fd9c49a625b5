"""The bundled data stays good enough to teach with: clean lint, the promised sizes, no train/eval overlap."""

import json

import pytest
from ftfy.badness import is_bad

from studio import data, paths
from studio.cli import main
from studio.lint import conversation_key

DATASETS = sorted(paths.DATASETS_DIR.glob("*.jsonl"))
NOTEBOOK_EXAMPLES = [
    ("Explique Machine Learning", "Machine Learning e o estudo de algoritmos que aprendem padroes de dados."),
    ("O que e um LLM?", "LLM e um modelo de linguagem treinado em grandes volumes de texto para entender e gerar linguagem."),
    ("Defina Inteligencia Artificial", "IA e a simulacao de processos de inteligencia humana por maquinas e sistemas de computacao."),
    ("O que e o mecanismo de Atencao?", "Atencao permite que o modelo foque em partes importantes do texto para entender o contexto."),
]


@pytest.mark.parametrize("path", DATASETS, ids=lambda p: p.name)
def test_check_is_clean_at_the_default_context(path, capsys):
    assert main(["check", "--dataset", str(path), "--strict"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("clean") and "truncated at context: 0" in out


@pytest.mark.parametrize("name, minimum", [("instrucoes-pt.jsonl", 300), ("instructions-en.jsonl", 300),
                                           ("instrucoes-pt.eval.jsonl", 30), ("instructions-en.eval.jsonl", 30)])
def test_instruction_sets_are_big_enough_and_use_the_input_field(name, minimum):
    conversations = data.load(paths.DATASETS_DIR / name).conversations
    assert len(conversations) >= minimum
    assert sum(bool(c.turns[0].input) for c in conversations) >= 0.3 * len(conversations)


def test_default_dataset_starts_with_the_course_notebook_examples():
    conversations = data.load(paths.DEFAULT_DATASET).conversations[:4]
    assert [(c.turns[0].text, c.turns[1].text) for c in conversations] == NOTEBOOK_EXAMPLES


@pytest.mark.parametrize("name", ["instrucoes-pt", "instructions-en"])
def test_eval_sets_do_not_overlap_training(name):
    train = {conversation_key(c) for c in data.load(paths.DATASETS_DIR / f"{name}.jsonl").conversations}
    held_out = {conversation_key(c) for c in data.load(paths.DATASETS_DIR / f"{name}.eval.jsonl").conversations}
    assert not train & held_out


def test_conversations_are_multi_turn_messages():
    path = paths.DATASETS_DIR / "conversas-pt.jsonl"
    conversations = data.load(path).conversations
    assert len(conversations) >= 60
    assert all(2 <= sum(t.role == "user" for t in c.turns) <= 4 for c in conversations)
    assert any(c.system for c in conversations)
    assert all("messages" in json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())


def test_pretraining_corpus_is_big_clean_prose():
    text = data.read_corpus(paths.DEFAULT_CORPUS)
    assert len(text.encode("utf-8")) >= 150_000
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    assert len(set(paragraphs)) == len(paragraphs)
    assert not any(is_bad(p) for p in paragraphs)
