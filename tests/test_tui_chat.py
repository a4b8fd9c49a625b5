"""Chat pane, driven by key presses against FakeChatBackend (two models: "base" and "tuned")."""

from __future__ import annotations

from textual.widgets import Input

from fakes import ANSWERS, BASE, TUNED, FakeChatBackend, show_pane, wait_until
from studio.tui.chat_backend import ChatError
from studio.tui.panes.chat import ChatColumn, ChatPane
from tui_helpers import SMALL_DATASET, StudioTestApp


def transcript_text(column: ChatColumn) -> str:
    return "\n".join(str(widget.render()) for widget in column.transcript.children)


async def open_chat(pilot) -> ChatPane:
    await show_pane(pilot, "f4", "chat")
    pane = pilot.app.query_one(ChatPane)
    await wait_until(pilot, lambda: pane.query_one("#chat-tuned", ChatColumn).choice is not None, what="the model list")
    return pane


async def ask(pilot, pane: ChatPane, prompt: str) -> None:
    await pilot.press(*prompt, "enter")
    await wait_until(pilot, lambda: not any(column.answering for column in pane.columns()), what="the answer")


async def test_prompt_streams_the_answer_into_the_history():
    backend = FakeChatBackend()
    app = StudioTestApp(SMALL_DATASET, chat_backend=backend)
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await open_chat(pilot)
        assert app.focused is pane.query_one("#chat-input", Input)
        await ask(pilot, pane, "capital?")
        tuned = pane.query_one("#chat-tuned", ChatColumn)
        text = transcript_text(tuned)
        assert "> capital?" in text
        assert ANSWERS[TUNED.key][0] in text
        assert "stopped at EOS" in text
        assert backend.calls[0].choice == TUNED  # the tuned model answers by default
        assert [turn.role for turn in backend.calls[0].conversation.turns] == ["user"]


async def test_history_is_passed_back_and_cleared():
    backend = FakeChatBackend()
    app = StudioTestApp(SMALL_DATASET, chat_backend=backend)
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await open_chat(pilot)
        await ask(pilot, pane, "one")
        await ask(pilot, pane, "two")
        turns = backend.calls[1].conversation.turns
        assert [(turn.role, turn.text) for turn in turns] == [
            ("user", "one"), ("assistant", ANSWERS[TUNED.key][0]), ("user", "two"),
        ]
        await pilot.press("ctrl+l")
        tuned = pane.query_one("#chat-tuned", ChatColumn)
        assert tuned.conversation.turns == () and transcript_text(tuned) == ""
        await ask(pilot, pane, "three")
        assert [turn.text for turn in backend.calls[2].conversation.turns] == ["three"]


async def test_sampling_keys_change_what_the_backend_gets():
    backend = FakeChatBackend()
    app = StudioTestApp(SMALL_DATASET, chat_backend=backend)
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await open_chat(pilot)
        await pilot.press("ctrl+t", "ctrl+t", "ctrl+r", "ctrl+k")
        await ask(pilot, pane, "a")
        sampling = backend.calls[-1].sampling
        assert (sampling.temperature, sampling.top_k) == (0.9, 50)
        await pilot.press("ctrl+g")
        assert "greedy" in str(pane.query_one("#chat-settings").render())
        await ask(pilot, pane, "b")
        sampling = backend.calls[-1].sampling
        assert (sampling.temperature, sampling.top_k) == (0.0, None)
        await pilot.press("ctrl+g")
        await ask(pilot, pane, "c")
        assert backend.calls[-1].sampling.temperature == 0.9


async def test_compare_mode_answers_with_base_and_tuned_side_by_side():
    backend = FakeChatBackend()
    app = StudioTestApp(SMALL_DATASET, chat_backend=backend)
    async with app.run_test(size=(120, 30)) as pilot:
        pane = await open_chat(pilot)
        await pilot.press("ctrl+o")
        base, tuned = pane.columns()
        assert base.display and base.region.x < tuned.region.x  # base on the left, tuned on the right
        await ask(pilot, pane, "capital?")
        assert {call.choice for call in backend.calls} == {BASE, TUNED}
        assert ANSWERS[BASE.key][0] in transcript_text(base)
        assert "no EOS: stopped at the token limit" in transcript_text(base)
        assert ANSWERS[TUNED.key][0] in transcript_text(tuned)
        await pilot.press("ctrl+o")
        assert pane.columns() == [tuned] and not base.display


async def test_typing_goes_on_while_the_model_answers_and_escape_stops_it():
    backend = FakeChatBackend(piece_delay=0.2)
    app = StudioTestApp(SMALL_DATASET, chat_backend=backend)
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await open_chat(pilot)
        tuned = pane.query_one("#chat-tuned", ChatColumn)
        await pilot.press(*"first", "enter")
        await pilot.press(*"next")
        assert tuned.answering
        assert pane.query_one("#chat-input", Input).value == "next"
        await pilot.press("enter")  # refused while answering: the text stays
        assert pane.query_one("#chat-input", Input).value == "next" and len(backend.calls) == 1
        await pilot.press("escape")
        await wait_until(pilot, lambda: not tuned.answering, what="the stop")
        assert "(stopped)" in transcript_text(tuned)
        assert tuned.conversation.turns[-1].text != ANSWERS[TUNED.key][0]  # cut short, and kept as said


async def test_a_model_that_cannot_answer_is_a_notification():
    class BrokenBackend(FakeChatBackend):
        def stream(self, choice, conversation, sampling, should_stop):
            raise ChatError("checkpoints/x: model.safetensors is corrupt")

    app = StudioTestApp(SMALL_DATASET, chat_backend=BrokenBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await open_chat(pilot)
        await ask(pilot, pane, "hello")
        assert [note.message for note in app.errors()] == ["checkpoints/x: model.safetensors is corrupt"]
        assert "(no answer)" in transcript_text(pane.query_one("#chat-tuned", ChatColumn))


async def test_no_model_yet_says_where_to_get_one():
    app = StudioTestApp(SMALL_DATASET, chat_backend=FakeChatBackend(choices=[]))
    async with app.run_test(size=(100, 30)) as pilot:
        await show_pane(pilot, "f4", "chat")
        await pilot.press(*"hi", "enter")
        assert any("No model to chat with yet" in note.message for note in app.errors())
        assert app.query_one("#chat-input", Input).value == "hi"
