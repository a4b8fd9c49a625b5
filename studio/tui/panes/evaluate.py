"""Evaluate pane: two models answer a prompt set side by side with the reference; a person rates each answer
1–5 on the chapter's four criteria, blind by default; the ratings' summary and the automatic metrics below.

The answers come from the App's chat backend (the same models and the same studio.generate path as chat),
on a thread worker; the ratings go to ratings.jsonl in model B's run folder (studio.evaluation.ratings), so
answering the same prompts again later continues the session where it stopped. Blind mode titles the answers
"left" and "right" and shuffles the sides per prompt: nothing on screen says which model wrote which.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import Input, Select, Static
from textual.worker import get_current_worker

from studio import data
from studio.evaluation.prompts import EvalPrompt, held_out_path, prompts_from_conversations, typed_prompts
from studio.evaluation.ratings import CRITERIA, RatedPrompt, RatingSession, ratings_path
from studio.evaluation.scores import score_answers
from studio.tui.errors import user_message
from studio.tui.messages import TorchReady
from studio.tui.widgets.eval_view import answer_text, metrics_text, prompt_text, summary_text

DATASET_PROMPTS = 50  # the opened dataset's first prompts: enough to judge, a minute or two on a CPU
PROGRESS_EVERY_S = 0.25  # the worker tells the UI how far it is at most this often
SAMPLED = {"temperature": 0.8, "top_k": 40, "seed": 1234}  # "g": seeded sampling instead of greedy
HINT = "press r: both models answer the prompts  ·  c/u/n/a criterion, 1–5 rate, h/l side, j/k prompt, b blind"


class EvaluatePane(Widget):
    DEFAULT_FOCUS = "#eval-body"

    BINDINGS = [
        Binding("r", "answer", "Answer", tooltip="Models A and B answer every prompt of the set", id="evaluate.answer"),
        Binding("x", "stop", "Stop", tooltip="Stop the models; the answers so far are kept", id="evaluate.stop"),
        Binding("j", "move(1)", "Next", id="evaluate.next"),
        Binding("k", "move(-1)", "Previous", id="evaluate.previous"),
        Binding("b", "toggle_blind", "Blind",
                tooltip="Hide which model wrote which answer and shuffle the sides", id="evaluate.blind"),
        Binding("g", "toggle_greedy", "Greedy",
                tooltip="Greedy answers, or seeded sampling (temperature 0.8, top-k 40)", id="evaluate.greedy"),
        Binding("h,left", "side(0)", "Left", show=False, id="evaluate.left"),
        Binding("l,right", "side(1)", "Right", show=False, id="evaluate.right"),
        Binding("e", "write('note')", "Note",
                tooltip="A free-text note on this prompt, saved with the ratings", id="evaluate.note"),
        Binding("p", "write('prompt')", "Type prompt", show=False,
                tooltip="Add a prompt of your own to the typed set", id="evaluate.type_prompt"),
        Binding("escape", "leave_input", "Leave", show=False, id="evaluate.leave_input"),
        *(Binding(key, f"criterion('{name}')", name, show=False, id=f"evaluate.{name}") for key, name, _ in CRITERIA),
        *(Binding(str(score), f"rate({score})", f"rate {score}", show=False, id=f"evaluate.rate{score}") for score in range(1, 6)),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.choices: list = []  # chat_backend.ModelChoice
        self.typed: list[str] = []
        self.greedy = True
        self.blind = True
        self.prompts: list[RatedPrompt] = []
        self.session: RatingSession | None = None
        self.metrics: list[dict] = []
        self.labels: dict = {}
        self.index = 0
        self.criterion = CRITERIA[0][1]
        self.side = 0
        self._writing = ""  # "note" | "prompt" while the input has the focus
        self._defaults: dict = {}  # select id → the model it was given by default (not chosen by the person)

    def compose(self) -> ComposeResult:
        with Horizontal(id="eval-controls"):
            yield Select([], prompt="model A", compact=True, id="eval-a")
            yield Select([], prompt="model B", compact=True, id="eval-b")
            yield Select(self._set_options(), compact=True, allow_blank=False, id="eval-set")
        yield Static(HINT, id="eval-status", markup=False)
        with VerticalScroll(id="eval-body"):
            yield Static("", id="eval-prompt")
            with Horizontal(id="eval-answers"):
                yield Static("", id="eval-left", classes="eval-answer")
                yield Static("", id="eval-right", classes="eval-answer")
            yield Static("", id="eval-summary")
            yield Static("", id="eval-metrics")
        yield Input(id="eval-input", compact=True)

    def on_mount(self) -> None:
        self._show_sets()
        self.watch(self.app, "workspace", self._show_sets, init=False)  # another dataset opened

    def on_torch_ready(self, message: TorchReady) -> None:
        self._load_choices()

    def on_show(self) -> None:
        self._show_sets()
        if self.app.torch_ready:
            self._load_choices()

    # ------------------------------------------------------------------------------------ choices

    def _set_options(self) -> list[tuple[str, str]]:
        """The prompt sets: the opened dataset's held-out file when it has one, its first prompts, the typed ones."""
        dataset = Path(self.app.dataset_path)
        held_out = held_out_path(dataset)
        options = []
        if held_out.exists():
            options.append((f"held-out: {held_out.name}", "held-out"))
        if held_out != dataset:
            options.append((f"dataset: {dataset.name} (first {DATASET_PROMPTS})", "dataset"))
        options.append((f"typed prompts ({len(self.typed)})", "typed"))
        return options

    def _show_sets(self, *_) -> None:
        options = self._set_options()
        select = self.query_one("#eval-set", Select)
        chosen = select.value
        select.set_options(options)
        if chosen in [value for _, value in options]:
            select.value = chosen

    @work(thread=True, exclusive=True, exit_on_error=False, group="evaluate-choices")
    def _load_choices(self) -> None:
        choices = self.app.chat_backend.choices()
        self.app.call_from_thread(self._show_choices, choices)

    def _show_choices(self, choices: list) -> None:
        """A: the newest base (pretrain) model, B: the newest tuned one, unless the person chose others."""
        if [c.key for c in choices] == [c.key for c in self.choices]:
            return
        self.choices = choices
        options = [(choice.label, choice.key) for choice in choices]
        tuned = [c.key for c in choices if c.stage == "sft"] or [c.key for c in choices]
        base = [c.key for c in choices if c.stage == "pretrain"] or [c.key for c in choices]
        for select_id, default in (("#eval-a", base), ("#eval-b", tuned)):
            select = self.query_one(select_id, Select)
            chosen = select.value
            select.set_options(options)
            if chosen in [key for _, key in options] and chosen != self._defaults.get(select_id):
                select.value = chosen  # the person's choice stays
            elif default:
                select.value = self._defaults[select_id] = default[0]  # a newer model may be the default now

    def _choice(self, select_id: str):
        key = self.query_one(select_id, Select).value
        return next((choice for choice in self.choices if choice.key == key), None)

    # ------------------------------------------------------------------------------------ answering

    def action_answer(self) -> None:
        a, b = self._choice("#eval-a"), self._choice("#eval-b")
        if a is None or b is None:
            self.notify("No model to evaluate yet: train one in the Train tab (F3)", severity="error")
            return
        if not self.app.torch_ready:
            self.notify("PyTorch is still loading; answer again in a moment", severity="warning")
            return
        self._status("loading the prompts…")
        self._answer(a, b, self.query_one("#eval-set", Select).value, list(self.typed), self.greedy)

    def action_stop(self) -> None:
        for worker in self.workers:
            if worker.group == "evaluate":
                worker.cancel()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        answering = any(w.group == "evaluate" and w.is_running for w in self.workers)
        if action == "stop":
            return answering
        if action == "answer":
            return not answering
        return True

    def _prompt_set(self, which: str, typed: list[str]) -> tuple[str, list[EvalPrompt]]:
        if which == "typed":
            return "typed prompts", typed_prompts(typed)
        path = held_out_path(self.app.dataset_path) if which == "held-out" else Path(self.app.dataset_path)
        result = data.load(path)  # raises DatasetError: one line for the user
        prompts = prompts_from_conversations(result.conversations)
        return str(path), prompts if which == "held-out" else prompts[:DATASET_PROMPTS]

    @work(thread=True, exclusive=True, exit_on_error=False, group="evaluate")
    def _answer(self, a, b, which: str, typed: list[str], greedy: bool) -> None:
        from studio.sampling import SamplingConfig

        worker = get_current_worker()
        try:
            name, prompts = self._prompt_set(which, typed)
        except data.DatasetError as error:
            self.app.call_from_thread(self._failed, str(error))
            return
        if not prompts:
            self.app.call_from_thread(self._failed, "no prompts: type some with p, or pick another set")
            return
        sampling = SamplingConfig() if greedy else SamplingConfig(**SAMPLED)
        backend, answers, metrics, told = self.app.chat_backend, {}, [], 0.0
        try:
            for model, choice in (("A", a), ("B", b)):
                answers[model] = []
                for index, prompt in enumerate(prompts):
                    if worker.is_cancelled:
                        return
                    answers[model].append(backend.answer(choice, prompt, index, sampling, lambda: worker.is_cancelled))
                    if time.monotonic() - told > PROGRESS_EVERY_S:
                        told = time.monotonic()
                        self.app.call_from_thread(self._status, f"{model} answering {index + 1}/{len(prompts)} of {Path(name).name}")
                scores = score_answers([x.text for x in answers[model]], [x.stop_reason for x in answers[model]],
                                       [p.reference for p in prompts])
                loss = backend.reference_loss(choice, prompts, lambda: worker.is_cancelled)
                metrics.append({**scores.__dict__, "loss": loss, "perplexity": math.exp(loss) if loss is not None and loss < 50 else None})
        except Exception as error:  # a model that cannot answer (broken checkpoint, run ended): one line, not a crash
            self.app.call_from_thread(self._failed, user_message(error))
            return
        rated = [RatedPrompt(p.source, p.question, p.reference, {"A": answers["A"][i].text, "B": answers["B"][i].text})
                 for i, p in enumerate(prompts)]
        self.app.call_from_thread(self._show_answers, a, b, rated, metrics, sampling.__dict__, name)

    def _failed(self, message: str) -> None:
        self._status(message)
        self.notify(message, title="Cannot evaluate", severity="error", markup=False)

    def _ratings_file(self, b) -> Path:
        run = self.app.current_run
        if b.kind == "live" and run is not None and run.run_dir is not None:
            return Path(run.run_dir) / "ratings.jsonl"
        return ratings_path(b.key)

    def _show_answers(self, a, b, rated: list[RatedPrompt], metrics: list[dict], sampling: dict, name: str) -> None:
        self.prompts, self.metrics = rated, metrics
        self.labels = {"A": a.label, "B": b.label}
        self.add_class("-answered")
        path = self._ratings_file(b)
        self.session = RatingSession.open(path, {"A": a.key, "B": b.key}, sampling, blind=self.blind)
        self.index, self.criterion, self.side = self.session.first_unrated(rated), CRITERIA[0][1], 0
        resumed = f"; continuing {path.name} ({len(self.session.scores)} ratings)" if self.session.scores else ""
        self._status(f"{len(rated)} prompts of {Path(name).name}{resumed}")
        self.refresh_bindings()
        self._show()

    # ------------------------------------------------------------------------------------ rating

    def action_move(self, step: int) -> None:
        if self.prompts:
            self.index = max(0, min(len(self.prompts) - 1, self.index + step))
            self.criterion, self.side = CRITERIA[0][1], 0
            self._show()
            self.query_one("#eval-body", VerticalScroll).scroll_home(animate=False)

    def action_side(self, side: int) -> None:
        self.side = side
        self._show()

    def action_criterion(self, name: str) -> None:
        self.criterion, self.side = name, 0
        self._show()

    def action_rate(self, score: int) -> None:
        """Rate the selected answer on the selected criterion, then move on: the other answer, then the next criterion."""
        if self.session is None or not self.prompts:
            self.notify("Nothing to rate yet: press r to answer the prompts", severity="warning")
            return
        self.session.rate(self.prompts[self.index], self.criterion, self.side, score)
        names = [name for _, name, _ in CRITERIA]
        if self.side == 0:
            self.side = 1
        elif names.index(self.criterion) + 1 < len(names):
            self.criterion, self.side = names[names.index(self.criterion) + 1], 0
        self._show()

    def action_toggle_blind(self) -> None:
        self.blind = not self.blind
        if self.session is not None:
            self.session.blind = self.blind
        self.notify(f"blind mode {'on: sides shuffled, models hidden' if self.blind else 'off'}")
        self._show()

    def action_toggle_greedy(self) -> None:
        self.greedy = not self.greedy
        self.notify("greedy answers" if self.greedy else "sampled answers (seeded): press r to answer again")

    def action_write(self, what: str) -> None:
        if what == "note" and not self.prompts:
            self.notify("Nothing to write a note on yet: press r first", severity="warning")
            return
        self._writing = what
        field = self.query_one("#eval-input", Input)
        field.placeholder = "note on this prompt, enter saves, esc leaves" if what == "note" else "a prompt of your own, enter adds it"
        field.add_class("-shown")
        field.focus()

    def action_leave_input(self) -> None:
        self.query_one("#eval-input", Input).remove_class("-shown")
        self.query_one("#eval-body").focus()

    @on(Input.Submitted, "#eval-input")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        event.input.clear()
        if text and self._writing == "note" and self.session is not None:
            self.session.note(self.prompts[self.index], text)
            self._show()
        elif text and self._writing == "prompt":
            self.typed.append(text)
            self._show_sets()
            self.query_one("#eval-set", Select).value = "typed"
            self.notify(f"{len(self.typed)} typed prompts: press r to answer them")
        self.action_leave_input()

    # ------------------------------------------------------------------------------------ drawing

    def _status(self, text: str) -> None:
        self.query_one("#eval-status", Static).update(text)

    def _show(self) -> None:
        session = self.session
        if session is None or not self.prompts:
            return
        prompt = self.prompts[self.index]
        self.query_one("#eval-prompt", Static).update(prompt_text(self.index, len(self.prompts), prompt))
        for side, widget_id in enumerate(("#eval-left", "#eval-right")):
            model = session.sides(prompt)[side]
            title = ("left", "right")[side] if self.blind else f"{model}: {self.labels[model]}"
            scores = {name: session.score(prompt, name, model) for _, name, _ in CRITERIA}
            criterion = self.criterion if side == self.side else None
            note = session.notes.get(prompt.key, "") if side == 0 else ""
            self.query_one(widget_id, Static).update(answer_text(title, prompt.answers[model], scores, criterion, note))
        self.query_one("#eval-summary", Static).update(summary_text(session.summary(), self.labels))
        self.query_one("#eval-metrics", Static).update(metrics_text(self.metrics))
