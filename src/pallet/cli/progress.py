"""Progress of blob transfers (pull, push, load): rich bars on a terminal, one line per event otherwise.

The interface is three calls a transfer makes, from any thread::

    p = progress.create(sys.stderr, quiet=args.quiet)
    p.start(digest, total=size)          # "Copying blob 1a2b3c4d5e6f"
    p.advance(digest, len(chunk))        # as bytes arrive (bar, speed, ETA on a TTY)
    p.finish(digest, "done")             # or "skipped: already exists", "failed"
    p.close()

On a TTY each blob gets a bar with bytes done/total, speed and time left (rich, imported only
then). Elsewhere (logs, CI, pipes) each event is one plain line; ``quiet`` prints nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from pallet.cli.render import human_size


def short_id(ident: str) -> str:
    """``sha256:1a2b...`` → ``1a2b3c4d5e6f`` (what docker and podman show for a blob)."""
    return ident.split(":", 1)[-1][:12]


class Progress(Protocol):
    def start(self, ident: str, total: int | None = None, kind: str = "blob") -> None: ...

    def advance(self, ident: str, n: int) -> None: ...

    def finish(self, ident: str, status: str = "done") -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """-q: nothing at all."""

    def start(self, ident: str, total: int | None = None, kind: str = "blob") -> None:
        pass

    def advance(self, ident: str, n: int) -> None:
        pass

    def finish(self, ident: str, status: str = "done") -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class _Item:
    kind: str
    total: int | None
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: bool = False


class PlainProgress:
    """One line per event, for logs and pipes: ``Copying blob 1a2b3c4d5e6f done (2.03MB in 0.4s)``."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._items: dict[str, _Item] = {}
        self._lock = threading.Lock()

    def _write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def start(self, ident: str, total: int | None = None, kind: str = "blob") -> None:
        with self._lock:
            self._items[ident] = _Item(kind, total)
            self._write(f"Copying {kind} {short_id(ident)}")

    def advance(self, ident: str, n: int) -> None:
        with self._lock:
            item = self._items.get(ident)
            if item is not None:
                item.done += n

    def finish(self, ident: str, status: str = "done") -> None:
        with self._lock:
            item = self._items.get(ident) or _Item("blob", None)
            if item.finished:
                return
            item.finished = True
            line = f"Copying {item.kind} {short_id(ident)} {status}"
            if item.done:
                line += f" ({human_size(item.done)} in {time.monotonic() - item.started:.1f}s)"
            self._write(line)

    def message(self, text: str) -> None:
        with self._lock:
            self._write(text)

    def close(self) -> None:
        pass


class RichProgress:
    """Per-blob bars on a terminal: bytes done/total, speed, time left."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=out),
            transient=False,
        )
        self._tasks: dict[str, Any] = {}
        self._kinds: dict[str, str] = {}
        self._totals: dict[str, int | None] = {}
        self._done: dict[str, int] = {}
        self._lock = threading.Lock()
        self._progress.start()

    def start(self, ident: str, total: int | None = None, kind: str = "blob") -> None:
        with self._lock:
            self._kinds[ident] = kind
            self._totals[ident], self._done[ident] = total, 0
            self._tasks[ident] = self._progress.add_task(f"Copying {kind} {short_id(ident)}", total=total)

    def advance(self, ident: str, n: int) -> None:
        task = self._tasks.get(ident)
        if task is not None:
            self._done[ident] += n
            self._progress.advance(task, n)

    def finish(self, ident: str, status: str = "done") -> None:
        with self._lock:
            task = self._tasks.get(ident)
            if task is None:
                return
            total = self._totals.get(ident) or self._done.get(ident, 0)
            self._progress.update(
                task,
                description=f"Copying {self._kinds[ident]} {short_id(ident)} {status}",
                total=total,
                completed=total,
            )

    def message(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


def create(out: TextIO | None = None, *, quiet: bool = False, tty: bool | None = None) -> Progress:
    """The right display for ``out`` (default stderr): none, rich bars on a TTY, plain lines otherwise."""
    out = out or sys.stderr
    if quiet:
        return NullProgress()
    if tty is None:
        isatty = getattr(out, "isatty", None)
        tty = bool(isatty and isatty())
    return RichProgress(out) if tty else PlainProgress(out)
