"""The Run tab: controls, progress, the live loss chart, evaluations, confusion and event log.

Keys call the session screen's run actions (also in the command palette). Everything shown is
drawn from the RunState that the screen's log follower rebuilds from events.jsonl.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from engine.core import protocol
from tui import format as fmt
from tui.freeze_rules import describe_groups
from tui.run_watch import displayed_state
from tui.widgets.confusion_matrix import ConfusionMatrix
from tui.widgets.pane import Pane
from tui.widgets.run.eval_table import EvalTable
from tui.widgets.run.event_log import MAX_LINES, EventLog
from tui.widgets.run.loss_chart import LossChart
from tui.widgets.run.run_progress import RunProgress

CONTROLS = "s start · p pause/resume · c checkpoint · v eval · x stop · k check"
STATE_STYLE = {"training": "bold green", "evaluating": "bold green", "paused": "bold yellow",
               "finished": "bold cyan", "failed": "bold red", "died": "bold red", "stopped": "yellow"}


STARTING = "starting … (the worker loads the data and the model)"


def status_text(state: protocol.RunState, alive: bool, starting: bool = False) -> Text:
    if starting:  # launched; its first event is a second or more away
        return Text.assemble(("run ", "bold"), (STARTING, "bold green"))
    shown = displayed_state(state, alive)
    if shown == protocol.RunState().state and not alive:
        return Text.assemble(("never run", "bold"), " · s starts training, k checks data and model first")
    text = Text.assemble(("run ", "bold"), (shown, STATE_STYLE.get(shown, "bold")))
    if state.detail and state.state in protocol.ACTIVE_STATES:  # "evaluating test split" is over once finished
        text.append(f" ({state.detail})")
    if state.device:
        text.append(f" · {state.device} · {state.precision}")
    if shown == "died":
        text.append(" · the worker is gone: see worker.log; s resumes from the last checkpoint", "red")
    best = state.best_eval
    if best:
        key = state.metric_for_best
        text.append(f" · best {key} {fmt.metric(best.get(key))} at step {best.get('step')}")
    return text


def check_report(report: dict[str, Any]) -> Table:
    """The pre-flight check as a two-column summary."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows = report.get("rows") or {}
    table.add_row("rows", " · ".join(f"{split} {n:,}" for split, n in rows.items()))
    table.add_row("labels", Text(", ".join(str(label) for label in report.get("labels") or [])))
    dropped = report.get("dropped") or {}
    if dropped:
        table.add_row("dropped", " · ".join(f"{reason} {n:,}" for reason, n in dropped.items()))
    lengths = report.get("token_lengths") or {}
    if lengths:
        table.add_row("tokens", " · ".join(f"{key} {fmt.whole(lengths.get(key))}" for key in ("p50", "p90", "max"))
                      + f" · truncated {fmt.percent(lengths.get('truncated'))}")
    model = report.get("model") or {}
    table.add_row("model", Text(f"{model.get('source', '?')} ({model.get('family', '?')}, "
                                f"{fmt.count(model.get('parameters'))})"))
    table.add_row("trainable", f"{fmt.count(report.get('trainable'))} of {fmt.count(report.get('total'))}"
                               f" · frozen: {describe_groups(report.get('frozen') or []) or 'nothing'}")
    return table


class RunPane(Pane, VerticalScroll):
    DEFAULT_CSS = """
    #run-status {
        height: auto;
    }

    #run-progress {
        height: 2;
    }

    /* charts and tables share what the screen has left: at 80x24 both stay on screen, taller
       screens show more of the loss curve and more evaluation rows; narrow and short screens
       rearrange them in app.tcss (SessionScreen.-narrow / -short) */
    #run-charts {
        height: 1fr;
        min-height: 8;
    }

    #loss-chart {
        width: 2fr;
    }

    #run-confusion {
        width: 1fr;
        min-width: 24;
        padding-left: 1;
    }

    #run-tables {
        height: 1fr;
        min-height: 6;
    }

    /* the evaluation table takes what its columns need (every class's F1), the log the rest */
    #eval-table {
        width: auto;
        max-width: 70%;
    }

    #event-log {
        width: 1fr;
        min-width: 30;
        border-left: vkey $primary;
        overflow-x: hidden;
    }

    #run-check {
        display: none;
        height: auto;
        border-top: hkey $primary;
    }

    #run-check.-shown {
        display: block;
    }
    """

    BINDINGS = [
        Binding("s", "screen.run_command('start')", "Start", id="run.start"),
        Binding("p", "screen.run_command('pause_resume')", "Pause/resume", id="run.pause_resume"),
        Binding("c", "screen.run_command('checkpoint')", "Checkpoint", id="run.checkpoint"),
        Binding("v", "screen.run_command('evaluate')", "Evaluate", show=False, id="run.evaluate"),
        Binding("x", "screen.run_command('stop')", "Stop", id="run.stop"),
        Binding("k", "screen.run_command('check')", "Check", show=False, id="run.check"),
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.shown_status = status_text(protocol.RunState(), False)
        # What arrived while the tab was hidden, drawn once it is shown again (see on_show).
        self.pending_run: tuple[protocol.RunState, bool, bool] | None = None
        self.pending_events: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Static(self.shown_status, id="run-status")
        yield Static(CONTROLS, classes="field-help")
        yield RunProgress(id="run-progress")
        with Horizontal(id="run-charts"):
            yield LossChart(id="loss-chart")
            yield ConfusionMatrix("", id="run-confusion")
        with Horizontal(id="run-tables"):
            yield EvalTable(id="eval-table")
            yield EventLog(id="event-log")
        yield Static("", id="run-check")

    def watch_has_focus(self, _has_focus: bool) -> None:
        """Restyle the pane alone when it gains or loses focus. Textual restyles every widget in it,
        in case a rule styles them by the pane's focus (none does); each DataTable restyled drops
        its rendered rows, so the evaluation table was drawn again on every switch to this tab."""
        self.app.stylesheet.update_nodes([self], animate=True)

    def on_show(self) -> None:
        """The tab was shown: its first frame reused what was drawn when it was left (a redraw of
        the chart and tables then would hold up the switch); what arrived meanwhile follows now."""
        if self.pending_events:
            events, self.pending_events = self.pending_events, []
            self.log_events(events)
        if self.pending_run is not None:
            (state, alive, starting), self.pending_run = self.pending_run, None
            self.show_run(state, alive, starting)

    def show_run(self, state: protocol.RunState, alive: bool, starting: bool = False) -> None:
        if not self.display:  # a hidden tab: keep only the newest, draw it when shown
            self.pending_run = (state, alive, starting)
            return
        status = status_text(state, alive, starting)
        if status != self.shown_status:  # an update re-lays out the screen: only when it changed
            self.shown_status = status
            self.query_one("#run-status", Static).update(status)
        self.query_one(RunProgress).show_run(state)
        self.query_one(LossChart).show_run(state)
        self.query_one(EvalTable).show_evals(state.evals)
        self.query_one("#run-confusion", ConfusionMatrix).show_eval(state.latest_eval, "latest")

    def log_events(self, events: list[dict[str, Any]]) -> None:
        if not self.display:
            self.pending_events = (self.pending_events + events)[-MAX_LINES:]  # the log keeps no more
            return
        self.query_one(EventLog).add_events(events)

    def show_check(self, report: dict[str, Any] | str) -> None:
        check = self.query_one("#run-check", Static)
        check.update(check_report(report) if isinstance(report, dict) else Text(report))
        check.add_class("-shown")
