"""UI responsiveness of the studio, measured the way a person meets it: in a real terminal (a pty).

1. Time to first frame of `python -m studio`: from spawning the process until the header and the pane
   tabs have been written to the terminal; also until the dataset rows are there, until torch has
   loaded (the device shows in the header), and how long `q` takes to exit.
2. Key-to-screen latency: press a key and time until the terminal has received text only its result
   draws. Three kinds of key: a pane switch (the heaviest: the screen is laid out again), the cursor
   moving down/up the dataset table (the preview follows), and typing a word into the filter (the
   table is filtered at every key). Measured with the app idle, then while a real training run goes
   on inside the app (there the pane switch goes mask / train pane, the curve redrawing); that run
   is long enough to outlast the presses and is stopped by `q`.
3. Training throughput inside the app, the train pane shown (numbers and curve redrawing), against
   the same run headless (studio.train.Trainer, no UI), from the trainer's own per-step tokens/s in
   each run's metrics.jsonl; no key is pressed. Rounds alternate and the best round of each counts,
   so a neighbour process stealing the CPU hurts both sides alike.
4. `--busy-neighbour` (only this): the same two runs idle and beside a busy neighbour, a process
   spinning `while True: pass` at the bench's own priority (a browser tab or a video call on a laptop
   does this to a core), in alternating rounds; prints in-app / headless idle and busy, and headless
   busy / idle, with the thread counts the runs' tuners chose (studio.cpu_threads).

    .venv/bin/python bench/ui.py                       # 1-3; ~15 min on 2 cores
    .venv/bin/python bench/ui.py --steps 100 --rounds 1 --presses 20
    .venv/bin/python bench/ui.py --busy-neighbour      # 4 alone; ~3 min on 2 idle cores

The in-app run is the real StudioApp in the pty, started with `start_training` right after mount
(what the train pane's `s` calls), so the run uses every core at a lower priority exactly as it does for
a person.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import pty
import re
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from studio.cpu_threads import is_thread_change
from studio.run_folder import METRICS_FILE, read_entries

ROOT = Path(__file__).resolve().parent.parent
COLUMNS, ROWS = 100, 30
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[P^_].*?\x1b\\|\x1b[@-Z\\-_]", re.S)
FIRST_FRAME = ("SFT Studio", "1 Dataset")  # the header and the tabs: what the first frame draws
ROWS_SHOWN = "examples · "  # the dataset pane's status line, once the file is loaded
DATASET, MASK, TRAIN = (  # text only that pane draws
    "filter: words",  # the dataset pane's filter placeholder
    "answer + its end token",  # the mask pane's legend
    "trained tok/s",  # the train pane's stats line, once a run has started
)
DOWN, UP, ESCAPE = b"\x1b[B", b"\x1b[A", b"\x1b"
FILTER_WORD = "pergunta"  # typed one key at a time; no 'p' is on the dataset pane before it (placeholder included)
WARMUP_STEPS = 10  # first steps build kernels and allocate: not counted in throughput
OUTLASTING_STEPS = 1_000_000  # a run for the key presses: still training when they are done (q stops it)


class Terminal:
    """A child process on a pty of COLUMNS x ROWS; everything it writes is kept with its arrival time."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.started = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:  # the child: size the terminal, then become the app
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
            os.chdir(ROOT)
            os.execve(argv[0], argv, {**os.environ, "TERM": "xterm-256color", **(env or {})})
        self.pid, self.fd = pid, fd
        self.chunks: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.5)
                if ready:
                    data = os.read(self.fd, 1 << 16)
                    if not data:
                        return
                    with self._lock:
                        self.chunks.append((time.perf_counter(), data.decode("utf-8", "replace")))
            except OSError:  # the child closed the pty
                return

    def mark(self) -> int:
        with self._lock:
            return len(self.chunks)

    def wait_for(self, text: str, since: int = 0, timeout: float = 30.0) -> float:
        """perf_counter time at which `text` had arrived (escape sequences removed), looking from chunk `since`."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self._lock:
                chunks = self.chunks[since:]
            seen = ""
            for arrived, chunk in chunks:
                seen += chunk
                if text in ANSI.sub("", seen):
                    return arrived
            time.sleep(0.002)
        raise TimeoutError(f"{text!r} not on screen after {timeout} s")

    def press(self, key: bytes) -> None:
        os.write(self.fd, key)

    def quit(self, timeout: float = 20.0) -> float:
        """Press q; seconds until the process has exited."""
        start = time.perf_counter()
        self.press(b"q")
        deadline = start + timeout
        while time.perf_counter() < deadline:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return time.perf_counter() - start
            time.sleep(0.01)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise TimeoutError(f"the app did not exit {timeout} s after q")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ── 1. startup ───────────────────────────────────────────────────────────────
def startup(runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"first frame": [], "dataset rows": [], "torch loaded": [], "quit": []}
    for _ in range(runs):
        terminal = Terminal([sys.executable, "-m", "studio"])
        frame = max(terminal.wait_for(marker) for marker in FIRST_FRAME)
        times["first frame"].append(frame - terminal.started)
        times["dataset rows"].append(terminal.wait_for(ROWS_SHOWN) - terminal.started)
        times["torch loaded"].append(terminal.wait_for("· cpu" if not _cuda() else "· cuda") - terminal.started)
        time.sleep(0.3)
        times["quit"].append(terminal.quit())
    return times


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ── 2. key-to-screen latency ─────────────────────────────────────────────────
@dataclass(frozen=True)
class KeyTest:
    """Keys pressed in turn, round and round, each with the texts that only its result draws: timed until all of
    them have arrived (none: the key sets up the next ones and is not timed); `setup` is pressed once first."""

    name: str
    cycle: tuple[tuple[bytes, tuple[str, ...]], ...]
    setup: bytes = b""


def typing_markers() -> list[tuple[str, ...]]:
    """What each key of FILTER_WORD draws: its echo in the filter, and, when it changes which examples match, the
    status line's new count ("N match") once the table has been filtered (a key that matches the same examples
    leaves the table as it is)."""
    from studio import data, paths
    from studio.tui.workspace import Workspace

    workspace = Workspace(data.load(paths.DEFAULT_DATASET))
    markers, previous = [], workspace.matching("")
    for end in range(1, len(FILTER_WORD) + 1):
        matches = workspace.matching(FILTER_WORD[:end])
        markers.append((FILTER_WORD[:end], f"{len(matches):,} match") if matches != previous else (FILTER_WORD[:end],))
        previous = matches
    return markers


def key_tests(other_pane: tuple[bytes, str]) -> list[KeyTest]:
    """The pane switch goes between the mask pane and `other_pane` (key, marker); the other two keys act in the
    dataset pane: the preview heading names the row under the cursor; a typed key as typing_markers says."""
    typing = tuple((key.encode(), markers) for key, markers in zip(FILTER_WORD, typing_markers()))
    return [
        KeyTest("pane switch", ((b"2", (MASK,)), (other_pane[0], (other_pane[1],)))),
        KeyTest("cursor down/up", ((DOWN, ("#1 · ",)), (UP, ("#0 · ",))), setup=b"1"),
        KeyTest("typing in the filter", ((b"/", ()), *typing, (ESCAPE, ())), setup=b"1"),  # escape empties it
    ]


def latencies(terminal: Terminal, test: KeyTest, presses: int) -> list[float]:
    """`presses` timed presses of the test's keys: ms from each key until its result has reached the terminal."""
    if test.setup:
        terminal.press(test.setup)
        time.sleep(0.5)
    results: list[float] = []
    while len(results) < presses:
        for key, markers in test.cycle:  # whole cycles, so the app ends as it began (escape empties the filter)
            since = terminal.mark()
            sent = time.perf_counter()
            terminal.press(key)
            if not markers:
                time.sleep(0.3)  # longer than Textual's wait for more bytes after a lone escape (100 ms)
                continue
            latency = 1000 * (max(terminal.wait_for(marker, since, timeout=10) for marker in markers) - sent)
            if len(results) < presses:
                results.append(latency)
            time.sleep(0.15)
    return results


def idle_latency(presses: int) -> dict[str, list[float]]:
    terminal = Terminal([sys.executable, "-m", "studio"])
    terminal.wait_for("· cpu" if not _cuda() else "· cuda")  # torch loaded: the app is idle from here
    terminal.wait_for(ROWS_SHOWN)
    time.sleep(0.5)
    values = {test.name: latencies(terminal, test, presses) for test in key_tests((b"1", DATASET))}
    terminal.quit()
    return values


# ── 3. training inside the app and headless ──────────────────────────────────
def train_config(steps: int, out_dir: str):
    from studio.train_config import TrainConfig

    return TrainConfig(steps=steps, out_dir=out_dir, save_every=0, eval_every=steps)


def throughput(out_dir: Path) -> float:
    """tokens/s over the timed steps: the trainer's per-step rates, weighted by each step's duration."""
    steps = [r for r in read_entries(out_dir / METRICS_FILE) if "tokens_per_s" in r]
    tokens = seconds = 0.0
    for previous, record in zip(steps, steps[1:]):
        if record["step"] <= WARMUP_STEPS:
            continue
        duration = record["elapsed"] - previous["elapsed"]
        tokens += record["tokens_per_s"] * duration
        seconds += duration
    return tokens / seconds


def thread_changes(out_dir: Path) -> list[str]:
    """The run's tuner's events ("threads 2 → 1: …"), shortened to the counts."""
    return [r["event"].split(":")[0] + f" at step {r['step']}" for r in read_entries(out_dir / METRICS_FILE)
            if is_thread_change(r.get("event", ""))]


def metrics_lines(out_dir: Path) -> int:
    path = out_dir / METRICS_FILE
    return len(read_entries(path)) if path.exists() else 0


def training_studio(out_dir: Path, steps: int) -> Terminal:
    """The studio in a pty, training `steps` into out_dir, past its warm-up steps."""
    terminal = Terminal([sys.executable, str(Path(__file__).resolve()), "--in-app-child", str(out_dir), str(steps)])
    terminal.wait_for(ROWS_SHOWN)
    while metrics_lines(out_dir) < WARMUP_STEPS:
        time.sleep(0.1)
    return terminal


def training_latency(presses: int) -> dict[str, list[float]]:
    """Key-to-screen while a real run trains inside the studio (ms by test)."""
    with tempfile.TemporaryDirectory() as out:
        terminal = training_studio(Path(out), OUTLASTING_STEPS)
        values = {test.name: latencies(terminal, test, presses) for test in key_tests((b"3", TRAIN))}
        terminal.quit()  # stops the run (it saves a checkpoint first)
        return values


def in_app_run(steps: int) -> tuple[float, list[str]]:
    """tokens/s of a run inside the studio, watched in the train pane (it redraws a few times a second), and its
    thread count changes."""
    with tempfile.TemporaryDirectory() as out:
        out_dir = Path(out)
        terminal = training_studio(out_dir, steps)
        terminal.press(b"3")
        while not (out_dir / "checkpoint").is_dir():  # the final save: written aside, then renamed into place
            time.sleep(0.2)
        terminal.quit()
        return throughput(out_dir), thread_changes(out_dir)


def headless_run(steps: int) -> tuple[float, list[str]]:
    with tempfile.TemporaryDirectory() as out:
        child = [sys.executable, str(Path(__file__).resolve()), "--headless-child", out, str(steps)]
        subprocess.run(child, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        return throughput(Path(out)), thread_changes(Path(out))


# ── 4. beside a busy neighbour ───────────────────────────────────────────────
def busy_neighbour(steps: int, rounds: int) -> None:
    """Alternating rounds of the in-app and the headless run, idle and beside one spinning process; prints the ratios
    of the best run of each kind."""
    runs: dict[str, list[float]] = {"idle app": [], "idle headless": [], "busy app": [], "busy headless": []}
    changes: dict[str, list[str]] = {kind: [] for kind in runs}
    for round_ in range(rounds):
        for when in ("idle", "busy"):
            neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if when == "busy" else None
            try:
                time.sleep(0.5 if neighbour else 0)
                order = ("app", "headless") if round_ % 2 == 0 else ("headless", "app")  # neither always goes first
                for where in order:
                    run = in_app_run if where == "app" else headless_run
                    rate, changed = run(steps)
                    runs[f"{when} {where}"].append(rate)
                    changes[f"{when} {where}"] += changed
            finally:
                if neighbour:
                    neighbour.kill()
                    neighbour.wait()
        print(f"  round {round_ + 1}: " + ", ".join(f"{kind} {values[-1]:,.0f}" for kind, values in runs.items())
              + f" tok/s; load average {_load()}", flush=True)
    best = {kind: max(values) for kind, values in runs.items()}
    print(f"\nbeside a busy neighbour, {steps} steps a run (first {WARMUP_STEPS} not timed), best of {rounds}, tokens/s")
    for kind, value in best.items():
        print(f"  {kind:<14} {value:>8,.0f}   thread changes: {'; '.join(changes[kind]) or 'none'}")
    print(f"  idle: in-app / headless       = {best['idle app'] / best['idle headless']:.2f}   (goal >= 0.95)")
    print(f"  busy: in-app / headless       = {best['busy app'] / best['busy headless']:.2f}   (goal >= 0.8)")
    print(f"  headless: busy / idle         = {best['busy headless'] / best['idle headless']:.2f}   (goal >= 0.45)")


def in_app_child(out: str, steps: int) -> None:
    from studio.tui.app import StudioApp

    class TrainingStudio(StudioApp):
        def on_mount(self) -> None:  # no super(): Textual runs StudioApp.on_mount too (every class's handler in the MRO)
            self.start_training(train_config(steps, out))  # threads left to the App (every core)

    TrainingStudio().run()


def headless_child(out: str, steps: int) -> None:
    from studio.train import Trainer

    Trainer(train_config(steps, out)).run()  # torch's threads, as `studio train`


# ── report ───────────────────────────────────────────────────────────────────
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="startups to time")
    parser.add_argument("--presses", type=int, default=40, help="key presses per latency measurement")
    parser.add_argument("--steps", type=int, help="training steps per throughput run (default 200; 80 with --busy-neighbour)")
    parser.add_argument("--rounds", type=int, help="alternating rounds of in-app and headless training (default 3; 2 with --busy-neighbour)")
    parser.add_argument("--busy-neighbour", action="store_true",
                        help="only the runs idle and beside a spinning process")
    parser.add_argument("--in-app-child", nargs=2, metavar=("OUT", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--headless-child", nargs=2, metavar=("OUT", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_app_child:
        return in_app_child(args.in_app_child[0], int(args.in_app_child[1]))
    if args.headless_child:
        return headless_child(args.headless_child[0], int(args.headless_child[1]))

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {_load()}, "
          f"terminal {COLUMNS}x{ROWS}, python {platform.python_version()}, nice {os.nice(0)}")
    if args.busy_neighbour:
        busy_neighbour(args.steps or 80, args.rounds or 2)
        return print(f"\nload average at the end {_load()}")
    args.steps, args.rounds = args.steps or 200, args.rounds or 3

    times = startup(args.runs)
    print(f"\nstartup, median of {args.runs} (min–max), seconds")
    for name, values in times.items():
        print(f"  {name:<13} {statistics.median(values):.2f}  ({min(values):.2f}–{max(values):.2f})")

    idle, training = idle_latency(args.presses), training_latency(args.presses)
    print(f"\nkey-to-screen, {args.presses} presses each, ms")
    for when, results in (("idle", idle), ("while training", training)):
        for name, values in results.items():
            print(f"  {name:<21} {when:<15} p50 {percentile(values, 50):4.0f}  p95 {percentile(values, 95):4.0f}  "
                  f"max {max(values):4.0f}")

    in_app, headless = [], []
    for _ in range(args.rounds):
        in_app.append(in_app_run(args.steps)[0])
        headless.append(headless_run(args.steps)[0])
    print(f"\ntraining throughput, {args.steps} steps (first {WARMUP_STEPS} not timed), best of {args.rounds}, tokens/s")
    print(f"  in the app  {max(in_app):,.0f}")
    print(f"  headless    {max(headless):,.0f}   in-app / headless = {max(in_app) / max(headless):.2f}")
    print("  rounds:", ", ".join(f"app {a:,.0f} / headless {h:,.0f}" for a, h in zip(in_app, headless)))
    print(f"\nload average at the end {_load()}")


def _load() -> str:
    """1, 5 and 15 min load averages: a neighbour job on a small machine moves every figure."""
    return " / ".join(f"{load:.1f}" for load in os.getloadavg())


if __name__ == "__main__":
    main()
