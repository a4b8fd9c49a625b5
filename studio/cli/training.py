"""`studio train` and `studio pretrain`: the Trainer run headless, with a progress bar, stopped cleanly
by Ctrl-C, SIGTERM or SIGHUP."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from studio.cli.common import EXIT_BAD_RECORDS, CliError
from studio.terminal import detach_from_terminal
from studio.train_config import DEVICES, OPTIMIZERS, TrainConfig, TrainingError

# flags of `studio train` / `studio pretrain` that map one to one onto TrainConfig fields (dest == field name)
TRAINING_FLAGS = ("dataset", "corpus", "init_from", "resume", "out_dir", "preset", "template", "steps", "batch_size", "optimizer", "lr", "muon_lr", "min_lr",
                  "context_size", "device", "seed", "threads", "bf16", "eval_every", "save_every", "train_on_prompt", "skip_invalid",
                  "probes", "probe_tokens", "max_file_mb", "grad_accum", "compile")
STOP_SIGNALS = {"SIGINT": 130, "SIGHUP": 129, "SIGTERM": 143}  # exit code 128 + signal number, as shells report it


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by train and pretrain. Every default is None: unset flags leave the --config file's
    value (or TrainConfig's default) alone, and a resumed run keeps its own settings."""
    parser.add_argument("--config", type=Path, help="run.toml with TrainConfig keys; flags override it")
    parser.add_argument("--resume", type=Path, help="continue a run exactly from its checkpoint (or run folder)")
    parser.add_argument("--out", dest="out_dir", type=Path, help="run folder (default: checkpoints/<stage>-<time>)")
    parser.add_argument("--preset", help="model size: tiny (char tokenizer), small, medium (BPE)")
    parser.add_argument("--steps", type=int, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, help="examples (or windows) per step; under torchrun shared by the ranks")
    parser.add_argument("--grad-accum", type=int, help="train each batch in this many pieces per device (a batch bigger than one holds)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help="auto (default): muon for the studio's GPT, adamw for a Hugging Face model")
    parser.add_argument("--lr", type=float, help="peak learning rate (warm-up, then cosine to min_lr); with muon, of the parameters AdamW steps")
    parser.add_argument("--muon-lr", type=float, help="peak learning rate of the blocks' weight matrices under muon (same schedule; default: lr x 5/3, 0.01 at the default lr)")
    parser.add_argument("--max-file-mb", type=float, help="refuse a larger dataset or corpus file (default 1024)")
    parser.add_argument("--min-lr", type=float, help="learning rate at the last step (default: lr / 20)")
    parser.add_argument("--context", dest="context_size", type=int, help="context length in tokens (default: the preset's)")
    parser.add_argument("--device", choices=DEVICES, help="default auto: CUDA when available")
    parser.add_argument("--seed", type=int, help="same seed, same run (bit for bit with --threads pinned too: 1 and 2 threads round differently)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: the fastest count, measured while training)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, help="bf16 autocast (default: on CUDA and bf16-capable CPUs)")
    parser.add_argument("--eval-every", type=int, help="steps between validation losses")
    parser.add_argument("--save-every", type=int, help="steps between checkpoints (0: only at the end)")
    parser.add_argument("--probes", type=int, help="held-out instructions answered at each validation, into metrics.jsonl (0: none)")
    parser.add_argument("--probe-tokens", type=int, help="longest probe answer in tokens")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (the compile time is shown)")


def _training_config(args, stage: str) -> TrainConfig:
    values = TrainConfig.from_toml(args.config).to_dict() if args.config else {}
    if values.get("stage", stage) != stage:
        raise CliError(f"{args.config}: stage = {values['stage']!r}; run it with `studio {values['stage']}`")
    values["stage"] = stage
    for name in TRAINING_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = str(value) if isinstance(value, Path) else value
    return TrainConfig.from_dict(values, "command line")


class _StopOnSignals:
    """Ctrl-C, SIGTERM and SIGHUP (an SSH drop) ask the trainer to stop; it saves a checkpoint and returns.
    A second Ctrl-C quits at once. After SIGHUP nothing more is written to the vanished terminal."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self):
        import signal

        for name in STOP_SIGNALS:
            if hasattr(signal, name):  # no SIGHUP on Windows
                self._previous[name] = signal.signal(getattr(signal, name), self._handle)
        return self

    def __exit__(self, *exc):
        import signal

        for name, handler in self._previous.items():
            signal.signal(getattr(signal, name), handler)

    def _handle(self, signum, frame):
        import signal

        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: leave without waiting for the save
        if signum == getattr(signal, "SIGHUP", None):
            detach_from_terminal()  # at once: a progress bar half-way through a write must not fail
        self.received = signal.Signals(signum).name
        self.trainer.request_stop()

    def terminal_lost(self) -> None:
        """A write to the terminal failed (EIO, EPIPE): it is gone as surely as after SIGHUP."""
        detach_from_terminal()
        self.received = self.received or "SIGHUP"
        self.trainer.request_stop()

    @property
    def hung_up(self) -> bool:
        return self.received == "SIGHUP"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


def _progress_stats(snapshot) -> str:
    last = snapshot.last
    if last is None:
        return snapshot.status
    val = f"  val {snapshot.val[-1][1]:.3f}" if snapshot.val else ""
    return (f"loss {last.loss:.3f}{val}  {last.tokens_per_s:,.0f} tok/s ({last.trained_tokens_per_s:,.0f} trained)"
            f"  eta {_duration(snapshot.eta)}")


def _follow_training(trainer, thread, console: Console, signals: _StopOnSignals) -> None:
    """Show progress until the trainer thread ends: a rich bar on a terminal, a plain line every ~5 % otherwise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    metrics, shown_events, next_line, last_line = trainer.metrics, 0, 0, 0
    bar = None
    if console.is_terminal:
        # auto_refresh off: every write to the terminal happens here, on the main thread, where a failed one is caught
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                       console=console, transient=False, auto_refresh=False)
        task = bar.add_task(trainer.config.stage, total=trainer.config.steps, stats="preparing")
        bar.start()
    try:
        while True:
            finished = not thread.is_alive()
            snapshot = metrics.snapshot()
            if signals.hung_up:
                return  # the terminal is gone; writing to it would fail
            events = snapshot.events[shown_events:]
            if finished and snapshot.message:
                events = [event for event in events if event != snapshot.message]  # the caller reports the outcome
            for event in events:
                (bar.console if bar else console).print(event, markup=False, soft_wrap=True)
            shown_events = len(snapshot.events)
            if bar:
                bar.update(task, total=snapshot.total_steps or None, completed=snapshot.step, stats=_progress_stats(snapshot))
                bar.refresh()
            elif snapshot.last and (snapshot.step >= next_line or (finished and snapshot.step > last_line)):
                last_line = snapshot.step
                console.print(f"step {snapshot.step}/{snapshot.total_steps}  {_progress_stats(snapshot)}", markup=False)
                next_line = snapshot.step + max(1, snapshot.total_steps // 20)
            if finished:
                return
            thread.join(0.25)
    finally:
        if bar:
            bar.stop()


def _run_training(config, console: Console) -> int:
    import threading

    from studio import distributed
    from studio.run_folder import METRICS_FILE
    from studio.train import Trainer  # imports torch: only a training run pays for it

    try:
        ranks = distributed.from_environment()
    except TrainingError as error:
        raise CliError(str(error)) from None
    if not ranks.is_main:
        console = Console(quiet=True)  # under torchrun rank 0 reports; the others speak only of their own errors
    trainer = Trainer(config)
    outcome: dict = {}

    def work():
        try:
            outcome["checkpoint"] = trainer.run()
        except BaseException as error:  # re-raised on the main thread below
            outcome["error"] = error

    thread = threading.Thread(target=work, name="studio-train", daemon=True)  # daemon: a second Ctrl-C can leave
    with _StopOnSignals(trainer) as signals:
        thread.start()
        try:
            _follow_training(trainer, thread, console, signals)
        except OSError:  # the terminal went away: the run must not go with it
            signals.terminal_lost()
        thread.join()  # the trainer saves before it returns; a second Ctrl-C still leaves at once (KeyboardInterrupt)
    error = outcome.get("error")
    if isinstance(error, TrainingError):
        raise CliError(str(error), EXIT_BAD_RECORDS)
    if error is not None:
        raise error
    path, step, total = outcome["checkpoint"], trainer.step, trainer.config.steps
    try:
        if signals.received:
            console.print(f"stopped by {signals.received} at step {step}/{total}; checkpoint saved in {path}", markup=False)
            command = "train" if config.stage == "sft" else "pretrain"
            console.print(f"go on with: studio {command} --resume {path}", markup=False)
            return STOP_SIGNALS[signals.received]
        console.print(f"done: {total} steps; checkpoint in {path}; metrics in {trainer.run_dir / METRICS_FILE}", markup=False)
    except OSError:
        pass  # stdout closed (the terminal went away): the checkpoint is saved all the same
    return 0


def _train_command(args, console: Console, stage: str) -> int:
    try:
        config = _training_config(args, stage)
    except TrainingError as error:  # a bad --config file or flag value
        raise CliError(str(error)) from None
    return _run_training(config, console)


def cmd_train(args, console: Console) -> int:
    return _train_command(args, console, "sft")


def cmd_pretrain(args, console: Console) -> int:
    return _train_command(args, console, "pretrain")
