"""The one runner of `bpfscope <tool>` for every tool on the Tool base (tools/_base.py).

It makes the tool's declared options into flags, builds the tool (a declared --iface is resolved and
checked before anything loads), opens it, and runs one of two loops until Ctrl-C, SIGTERM or the end
of --duration: a polling tool is read every --interval (a live table on a terminal, a line of text
otherwise, a JSON object with --json); a streaming tool's records are written as they come (lines of
text or JSON, or a live table of the newest). At the end one final record, always with `lost` and
`missed` from the tool's stats(), and a summary line. Every JSON object the runner writes is stamped
with "time" here. A tool's actions (`bpfscope guard allow CIDR`) are subcommands that change a running
instance: the runner calls Tool.act and prints what it says.

What a tool's output looks like is its view: a PollingView or StreamingView subclass in
cli/<name>.py, made by that module's `view(tool, args)`. A tool without that module gets the default
view of its kind."""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import importlib.util
import json
import sys
import time
from collections import deque
from typing import Any, Callable, Generic, Iterator, Optional, Sequence, TypeVar

from ..errors import BpfscopeError
from ..output.jsonlines import emit
from ..tools._base import Kind, Option, Tool
from .options import StopFlag, catch_hangup, stop_flag, unseen

__all__ = ["PollingView", "StreamingView", "View", "add_arguments", "run", "stamped"]

_T = TypeVar("_T", bound=Tool)
_STEP = 0.1  # seconds: the longest a loop waits before it looks at the stop flag again
_SHOWN = 20  # rows of a streaming tool's live table: the newest records
_LIVE_INTERVAL = 1.0  # seconds between redraws of a live table where --interval gives none


def stamped(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with the wall-clock time first: the one place a JSON object gets its "time"."""
    return {"time": round(time.time(), 3), **record}


class View(Generic[_T]):
    """How a tool's results look; the runner decides when and where they are written."""

    #: a live table's columns (on a terminal, without --json); none: lines of text on a terminal too
    columns: Sequence[str] = ()

    def __init__(self, tool: _T, args: argparse.Namespace) -> None:
        self.tool = tool
        self.args = args
        self.started = time.monotonic()  # the run's start: --duration and "seconds" count from here

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    #: whether SIGHUP calls hangup() between polls; otherwise it does what it did before the run
    catches_hangup = False

    def banner(self) -> Optional[str]:
        """A line on stderr once the tool runs (not shown under a live table, whose title says it)."""
        return None

    def header(self) -> Optional[str]:
        """The first line of text output (not with --json, nor under a live table)."""
        return None

    def hangup(self) -> None:
        """SIGHUP, where the view catches it (tcmon re-reads its rules file)."""

    def ended(self) -> Optional[str]:
        """Why the run is over before it was told to stop (the traced process exited), else None; the
        runner looks between polls, and says it on stderr."""
        return None

    def title(self) -> str:
        return f"bpfscope {self.tool.NAME} — Ctrl-C to stop"

    def rows(self) -> list[list[Any]]:
        """The live table's rows."""
        return []

    def final(self) -> dict[str, Any]:
        """The tool's totals for the final record (read while it is open); the runner adds time,
        final, seconds, lost and missed."""
        return {}

    def summary(self, final: dict[str, Any]) -> str:
        """The last line: on stdout, or on stderr after the final JSON object."""
        return f"{self.tool.NAME}: {unseen(final)} in {final['seconds']:.1f} s"

    def text_summary(self, final: dict[str, Any]) -> str:
        """What a run without --json prints at the end."""
        return self.summary(final)


class PollingView(View[_T]):
    """A polling tool's view. `update()` reads the tool once per interval; `record()`, `line()` and
    `rows()` show what it read. The default reads `tool.snapshot()` and shows its `as_dict()`."""

    def begin(self) -> None:
        """Reads the tool once before the first interval (a baseline for rates)."""
        self.update()

    def update(self) -> None:
        self.now: Any = self.tool.snapshot()

    def record(self) -> dict[str, Any]:
        """The interval as JSON (without its time)."""
        return dict(self.now.as_dict())

    def line(self) -> str:
        """The interval as text, where there is no live table."""
        return " ".join(f"{key}={value}" for key, value in self.record().items() if not isinstance(value, dict))

    def final(self) -> dict[str, Any]:
        self.update()
        return self.record()


class StreamingView(View[_T]):
    """A streaming tool's view. `poll()` takes a batch of records from the tool, `take()` counts it,
    and `json_lines()`/`text_lines()` format it (bytes, one line per record). The default handles a
    list of records that have `as_dict()`."""

    def __init__(self, tool: _T, args: argparse.Namespace) -> None:
        super().__init__(tool, args)
        self.events = 0
        self.recent: deque[Any] = deque(maxlen=_SHOWN)

    def poll(self, timeout_ms: int) -> Any:
        return self.tool.poll(timeout_ms)

    def flush(self) -> Any:
        """The last batch, once the ring is drained: what the tool still held back."""
        return self.tool.flush()

    def take(self, batch: Any) -> None:
        self.events += len(batch)
        if self.columns:
            self.recent.extend(batch)

    def row(self, record: Any) -> list[Any]:
        """A record as a row of the live table, which shows the newest (`recent`)."""
        return [record.as_dict().get(column) for column in self.columns]

    def rows(self) -> list[list[Any]]:
        return [self.row(record) for record in self.recent]

    def json_lines(self, batch: Any) -> bytes:
        return b"".join(json.dumps(record.as_dict(), separators=(",", ":")).encode() + b"\n" for record in batch)

    def text_lines(self, batch: Any) -> bytes:
        return b"".join(f"{record}\n".encode() for record in batch)

    def final(self) -> dict[str, Any]:
        return {"events": self.events}


# --- options ---


def add_arguments(parser: argparse.ArgumentParser, tool: type[Tool]) -> None:
    """The tool's declared options as flags, and its actions as subcommands."""
    for option in tool.OPTIONS:
        if option.cli:
            _add(parser, option)
    if tool.ACTIONS:
        actions = parser.add_subparsers(dest="action", metavar="ACTION",
                                        title=f"change a running {tool.NAME} (from another shell)")
        for action in tool.ACTIONS:
            action_parser = actions.add_parser(action.name, help=action.help, description=action.help)
            for option in action.options:
                _add(action_parser, option)


def _unset(option: Option) -> Any:
    """What argparse holds for an option not given."""
    return option.negated if option.parse is None else None if option.many else option.default


def _add(parser: argparse.ArgumentParser, option: Option) -> None:
    shown = argparse.SUPPRESS if option.hidden else option.help + (" (required)" if option.required else "")
    if option.positional:
        assert option.parse is not None, option  # a bare argument is a value, never an on/off flag
        parser.add_argument(option.name, type=option.parse, metavar=option.metavar, choices=option.choices,
                            help=shown)
        return
    names = ([option.short] if option.short else []) + [option.flag]
    aliases = list(option.aliases)  # an argument of their own, so that --help shows none of them
    for flags, text, default in ((names, shown, _unset(option)), (aliases, argparse.SUPPRESS, argparse.SUPPRESS)):
        if not flags:
            continue
        if option.parse is None:
            parser.add_argument(*flags, dest=option.name, action="store_false" if option.negated else "store_true",
                                default=default, help=text)
        else:
            parser.add_argument(*flags, dest=option.name, type=option.parse, default=default,
                                action="append" if option.many else "store", metavar=option.metavar,
                                choices=option.choices, help=text)


def _action_values(tool: type[Tool], name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The values action `name` takes; an option of the tool's run given with it is an error, since
    the action would ignore it."""
    action = next(a for a in tool.ACTIONS if a.name == name)
    taken = {option.name for option in action.options} | set(action.uses)
    for option in tool.OPTIONS:
        if option.name not in taken and getattr(args, option.name, _unset(option)) != _unset(option):
            raise BpfscopeError(errno.EINVAL, f"{option.shown} is for running a {tool.NAME}, not for "
                                f"`{tool.NAME} {name}`")
    return {key: getattr(args, key) for key in taken}


# --- running ---


def _view_maker(name: str) -> Optional[Callable[[Any, argparse.Namespace], View[Any]]]:
    module = f"{__package__}.{name}"
    if importlib.util.find_spec(module) is None:
        return None
    maker: Callable[[Any, argparse.Namespace], View[Any]] = importlib.import_module(module).view
    return maker


def _default_view(tool: Tool, args: argparse.Namespace) -> View[Any]:
    return PollingView(tool, args) if tool.kind is Kind.POLLING else StreamingView(tool, args)


def run(tool_class: type[Tool], args: argparse.Namespace) -> int:
    """Runs the tool as `args` ask (or the action they name); what it printed last is its final
    record and summary."""
    action = getattr(args, "action", None)
    if action:
        print(tool_class.act(action, _action_values(tool_class, action, args)), flush=True)
        return 0
    tool = tool_class.from_options(vars(args))
    make_view = _view_maker(tool_class.NAME) or _default_view
    as_json = bool(getattr(args, "json", False))
    with stop_flag() as stop, tool:
        for note in tool.notes:
            print(f"bpfscope {tool.NAME}: {note}", file=sys.stderr, flush=True)
        view = make_view(tool, args)
        live = bool(view.columns) and not as_json and sys.stdout.isatty()
        banner = view.banner()
        if banner and not live:  # on stderr, so stdout holds only results; it says the tool runs
            print(banner, file=sys.stderr, flush=True)
        header = None if as_json or live else view.header()
        if header:
            print(header, flush=True)
        duration = getattr(args, "duration", None)
        end = view.started + duration if duration else float("inf")
        interval: Optional[float] = getattr(args, "interval", None)
        if live and interval is None:  # a tool that prints only at the end without --interval (a histogram)
            interval = _LIVE_INTERVAL
        try:
            with catch_hangup(stop) if view.catches_hangup else contextlib.nullcontext():
                if isinstance(view, PollingView):
                    _poll(view, interval, end, stop, as_json=as_json, live=live)
                else:
                    assert isinstance(view, StreamingView)
                    _stream(view, interval, end, stop, as_json=as_json, live=live)
        except BrokenPipeError:  # the reader went away (`| head`): stop as if told to
            sys.stdout = None  # nothing more to write or flush at exit
        seconds = view.seconds
        stats = tool.stats()
        final = {**stamped({"final": True, "seconds": round(seconds, 3)}), **view.final(),
                 "lost": stats.lost, "missed": stats.missed}
    if as_json:
        if sys.stdout is not None:
            emit(final, sys.stdout)
        print(view.summary(final), file=sys.stderr, flush=True)
    else:
        print(view.text_summary(final), flush=True)
    return 0


def _heed(view: View[Any], stop: StopFlag) -> None:
    """What came since the last look, acted on here between polls, never inside a handler: a SIGHUP;
    and the end of the run, where the view says it is over (said on stderr)."""
    if stop.hangup:
        stop.hangup = False
        view.hangup()
    reason = view.ended()
    if reason:
        print(reason, file=sys.stderr, flush=True)
        stop.requested = True


def _intervals(view: View[Any], interval: Optional[float], end: float, stop: StopFlag) -> Iterator[None]:
    """Yields at the end of each interval (none without one) until `end` or a stop, looking at the
    stop flag at least every _STEP seconds."""
    step = interval or float("inf")
    next_tick = time.monotonic() + step
    while not stop.requested:
        _heed(view, stop)
        now = time.monotonic()
        if now >= end:
            return
        if now >= next_tick:
            yield
            next_tick += step
            continue
        time.sleep(min(_STEP, end - now, next_tick - now))


def _poll(view: PollingView[Any], interval: Optional[float], end: float, stop: StopFlag, *, as_json: bool,
          live: bool) -> None:
    view.begin()
    if live:
        from ..output.live import LiveTable

        with LiveTable(view.title(), view.columns) as table:
            table.update(view.rows())
            for _ in _intervals(view, interval, end, stop):
                view.update()
                table.update(view.rows(), title=view.title())
        return
    for _ in _intervals(view, interval, end, stop):
        view.update()
        if as_json:
            emit(stamped(view.record()), sys.stdout)
        else:
            print(view.line(), flush=True)


def _drain(view: StreamingView[Any]) -> None:
    while len(batch := view.poll(0)):
        view.take(batch)


def _stream(view: StreamingView[Any], interval: Optional[float], end: float, stop: StopFlag, *, as_json: bool,
            live: bool) -> None:
    if live:
        from ..output.live import LiveTable

        with LiveTable(view.title(), view.columns) as table:
            for _ in _intervals(view, interval, end, stop):
                _drain(view)
                table.update(view.rows(), title=view.title())
        _drain(view)  # what came between the last refresh and the stop
        if len(batch := view.flush()):  # and what the tool still held back
            view.take(batch)
        return
    out = sys.stdout.buffer  # views format bytes: no text layer per batch
    write: Callable[[Any], bytes] = view.json_lines if as_json else view.text_lines

    def show(batch: Any) -> None:
        view.take(batch)
        lines = memoryview(write(batch))
        while lines:
            # Unbuffered (python -u, PYTHONUNBUFFERED), stdout.buffer is the raw file: a signal that
            # comes while a pipe is full makes it write part of the batch and say how much.
            lines = lines[out.write(lines):]
        out.flush()

    while True:
        _heed(view, stop)
        left = end - time.monotonic()
        last = stop.requested or left <= 0
        batch = view.poll(0 if last else int(min(left, _STEP) * 1000) + 1)
        if len(batch):
            show(batch)
        elif last:
            break  # stopped, and what the ring held is written
    if len(batch := view.flush()):  # what the tool still held back
        show(batch)
