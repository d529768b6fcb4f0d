"""Where the run is: a bar, then epoch, step, ETA and throughput from the latest progress event."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from engine.core import protocol
from tui import format as fmt


def progress_line(state: protocol.RunState) -> str:
    steps = f"{state.step:,}/{state.max_steps:,}" if state.max_steps else f"{state.step:,}"
    eta = fmt.duration(state.eta_s) if state.state in protocol.ACTIVE_STATES else "—"
    return (f"epoch {state.epoch:.2f} · step {steps} · ETA {eta} · "
            f"{state.samples_per_s:.1f} samples/s · elapsed {fmt.duration(state.elapsed_s)}")


class RunProgress(Vertical):
    DEFAULT_CSS = """
    #run-bar {
        width: 1fr;
    }

    #run-bar Bar {
        width: 1fr;
    }

    #run-progress-text {
        width: 1fr;
        height: 1;
    }
    """

    def compose(self) -> ComposeResult:
        yield ProgressBar(total=1, show_eta=False, id="run-bar")
        yield Static("", id="run-progress-text")

    def show_run(self, state: protocol.RunState) -> None:
        # no step count yet: pulse while the worker prepares; a run that never started shows an empty bar
        active = state.state in protocol.ACTIVE_STATES
        self.query_one(ProgressBar).update(total=state.max_steps or (None if active else 1), progress=state.step)
        # one line of fixed height: no re-layout of the screen per update
        self.query_one("#run-progress-text", Static).update(Text(progress_line(state)), layout=False)
