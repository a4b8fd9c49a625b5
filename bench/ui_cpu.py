"""The UI thread's CPU time per key: what a key costs the studio, free of a neighbour's load.

bench/ui.py times key-to-screen on the wall clock, which a busy neighbour inflates. This bench drives the same
studio on the same pty with the same keys (bench/ui.py's key tests: the pane switch, the cursor in the dataset
table, typing into the filter) and reads the app's main thread's own CPU time from the kernel
(/proc/PID/task/PID/schedstat, nanoseconds) before each key and once its result has reached the terminal.
The main thread runs Textual's event loop: every handler, layout, render and write of the screen. What the
app's timers cost at rest over the same wall time (measured before the keys) is subtracted.

    .venv/bin/python bench/ui_cpu.py                  # idle and while training; --presses 40
    .venv/bin/python bench/ui_cpu.py --idle-only --presses 20

Linux only (schedstat). Training runs on threads of their own: their CPU is not counted, only what the UI
thread does while a run goes on (the curve redrawn, the stats line).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui import (OUTLASTING_STEPS, ROWS_SHOWN, DATASET, TRAIN, KeyTest, Terminal, _cuda, _load,  # noqa: E402
                key_tests, percentile, training_studio)

SETTLE_S = 0.15  # after a key's result has arrived: what the key set off afterwards (a debounce, a timer) counts too


def ui_cpu_seconds(pid: int) -> float:
    """CPU time of the process's main thread (the event loop), in seconds."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as file:
        return int(file.read().split()[0]) / 1e9


def resting_rate(terminal: Terminal, seconds: float = 2.0) -> float:
    """CPU seconds per second the UI thread spends with no key pressed (timers, polling, a run's curve)."""
    start_cpu, start = ui_cpu_seconds(terminal.pid), time.perf_counter()
    time.sleep(seconds)
    return (ui_cpu_seconds(terminal.pid) - start_cpu) / (time.perf_counter() - start)


def key_cpu(terminal: Terminal, test: KeyTest, presses: int, rest: float) -> list[float]:
    """ms of UI-thread CPU per timed key of the test, what the app does at rest over the same time taken off."""
    if test.setup:
        terminal.press(test.setup)
        time.sleep(0.5)
    results: list[float] = []
    while len(results) < presses:
        for key, markers in test.cycle:
            since, cpu, start = terminal.mark(), ui_cpu_seconds(terminal.pid), time.perf_counter()
            terminal.press(key)
            if not markers:
                time.sleep(0.3)  # longer than Textual's wait for more bytes after a lone escape
                continue
            for marker in markers:
                terminal.wait_for(marker, since, timeout=10)
            time.sleep(SETTLE_S)
            spent = ui_cpu_seconds(terminal.pid) - cpu - rest * (time.perf_counter() - start)
            if len(results) < presses:
                results.append(1000 * spent)
    return results


def measure(terminal: Terminal, tests: list[KeyTest], presses: int) -> dict[str, list[float]]:
    rest = resting_rate(terminal)
    print(f"  at rest the UI thread uses {100 * rest:.1f} % of a core")
    return {test.name: key_cpu(terminal, test, presses, rest) for test in tests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=40, help="key presses per test")
    parser.add_argument("--idle-only", action="store_true", help="skip the measurement while training")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {_load()}, "
          f"python {platform.python_version()}")
    results = {}
    print("idle:")
    terminal = Terminal([sys.executable, "-m", "studio"])
    terminal.wait_for("· cpu" if not _cuda() else "· cuda")
    terminal.wait_for(ROWS_SHOWN)
    time.sleep(0.5)
    results["idle"] = measure(terminal, key_tests((b"1", DATASET)), args.presses)
    terminal.quit()
    if not args.idle_only:
        print("while training:")
        with tempfile.TemporaryDirectory() as out:
            terminal = training_studio(Path(out), OUTLASTING_STEPS)
            results["while training"] = measure(terminal, key_tests((b"3", TRAIN)), args.presses)
            terminal.quit()
    print(f"\nUI-thread CPU per key, {args.presses} presses each, ms")
    for when, by_test in results.items():
        for name, values in by_test.items():
            print(f"  {name:<21} {when:<15} mean {statistics.mean(values):5.1f}  p50 {percentile(values, 50):5.1f}  "
                  f"p95 {percentile(values, 95):5.1f}")
    print(f"load average at the end {_load()}")


if __name__ == "__main__":
    main()
