"""Container logs: docker's json-file and podman's k8s-file formats, with size-based rotation.

json-file lines are docker's: ``{"log":"text\\n","stream":"stdout","time":"<RFC3339Nano>"}``;
a line longer than 16 KiB, or one cut off at EOF, is written as a partial entry (no trailing
newline), as docker does. k8s-file lines are CRI's: ``<RFC3339Nano> stdout F text`` with ``P``
for partial lines. With ``max-size`` the file is rotated to ``.1``, ``.2`` ... keeping
``max-file`` files in all. The writer runs in the monitor, so this module imports only json.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

MAX_LINE = 16 * 1024


def _rfc3339(ns: int, zulu: bool = True) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    if zulu:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
    lt = time.localtime(secs)
    off = lt.tm_gmtoff or 0
    sign = "+" if off >= 0 else "-"
    off = abs(off)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", lt) + f".{frac:09d}{sign}{off // 3600:02d}:{off % 3600 // 60:02d}"
    )


class LogWriter:
    """Appends a container's output to its log file; one per monitor."""

    def __init__(self, path: str, driver: str = "json-file", max_size: int = 0, max_file: int = 1) -> None:
        self.path = path
        self.driver = driver
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self._pending: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self._fd = -1
        self._size = 0
        if driver != "none":
            self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def _entry(self, stream: str, data: bytes, partial: bool, ns: int) -> bytes:
        if self.driver == "k8s-file":
            line = data[:-1] if data.endswith(b"\n") else data
            return (
                _rfc3339(ns, zulu=False).encode()
                + b" "
                + stream.encode()
                + (b" P " if partial else b" F ")
                + line
                + b"\n"
            )
        text = data.decode("utf-8", "replace")
        return (
            json.dumps(
                {"log": text, "stream": stream, "time": _rfc3339(ns)},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            + "\n"
        ).encode()

    def _emit(self, entries: list[bytes]) -> None:
        if self._fd < 0:
            return
        for e in entries:
            if self.max_size and self._size and self._size + len(e) > self.max_size:
                self._rotate()
            os.write(self._fd, e)
            self._size += len(e)

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.max_file <= 1:
            os.truncate(self.path, 0)
        else:
            for i in range(self.max_file - 1, 0, -1):
                src = self.path if i == 1 else f"{self.path}.{i - 1}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i}")
        self._open()

    def write(self, stream: str, data: bytes) -> None:
        """Log ``data`` read from ``stream``: complete lines now, the rest when it completes."""
        if self.driver == "none" or not data:
            return
        buf = self._pending[stream] + data
        ns = time.time_ns()
        entries = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start : nl + 1]
            while len(line) > MAX_LINE:
                entries.append(self._entry(stream, line[:MAX_LINE], True, ns))
                line = line[MAX_LINE:]
            entries.append(self._entry(stream, line, False, ns))
            start = nl + 1
        rest = buf[start:]
        while len(rest) >= MAX_LINE:
            entries.append(self._entry(stream, rest[:MAX_LINE], True, ns))
            rest = rest[MAX_LINE:]
        self._pending[stream] = rest
        self._emit(entries)

    def flush(self) -> None:
        """Write out partial lines (the stream ended without a newline)."""
        ns = time.time_ns()
        entries = []
        for stream, rest in self._pending.items():
            if rest:
                entries.append(self._entry(stream, rest, True, ns))
                self._pending[stream] = b""
        self._emit(entries)

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LogRecord:
    """One log entry: stream ("stdout"/"stderr"), RFC 3339 time, bytes, partial line or not."""

    __slots__ = ("data", "partial", "stream", "time")

    def __init__(self, stream: str, time: str, data: bytes, partial: bool = False) -> None:
        self.stream, self.time, self.data, self.partial = stream, time, data, partial

    def __repr__(self) -> str:
        return f"LogRecord({self.stream!r}, {self.time!r}, {self.data!r}, {self.partial})"


def _parse_time_ns(text: str) -> int:
    """RFC 3339 (any fraction, Z or offset) → ns since the epoch."""
    import calendar

    t = text.strip()
    off = 0
    if t.endswith("Z"):
        t = t[:-1]
    elif len(t) > 6 and t[-6] in "+-" and t[-3] == ":":
        sign = 1 if t[-6] == "+" else -1
        off = sign * (int(t[-5:-3]) * 3600 + int(t[-2:]) * 60)
        t = t[:-6]
    frac = 0
    if "." in t:
        t, f = t.split(".", 1)
        frac = int((f + "000000000")[:9])
    secs = calendar.timegm(time.strptime(t, "%Y-%m-%dT%H:%M:%S")) - off
    return secs * 1_000_000_000 + frac


def parse_since(value: str | None, now_ns: int | None = None) -> int | None:
    """docker's --since/--until: RFC 3339, a Unix timestamp, or a duration before now (10m, 1h30m)."""
    if not value:
        return None
    from pallet.engine.options import parse_duration
    from pallet.errors import UsageError

    v = value.strip()
    now_ns = now_ns if now_ns is not None else time.time_ns()
    try:
        if v.replace(".", "", 1).isdigit():
            return int(float(v) * 1_000_000_000)
        if "T" in v or (len(v) == 10 and v[4] == "-"):
            if "T" not in v:
                v += "T00:00:00Z"
            elif not (v.endswith("Z") or v[-6] in "+-"):
                v += "Z"
            return _parse_time_ns(v)
        dur = parse_duration(v, "time")
        return now_ns - (dur or 0)
    except (ValueError, UsageError):
        raise UsageError(
            f"invalid time {value!r}: use RFC 3339, a Unix timestamp or a duration such as 10m"
        ) from None


def _parse_line(driver: str, line: bytes) -> LogRecord | None:
    if driver == "k8s-file":
        parts = line.rstrip(b"\n").split(b" ", 3)
        if len(parts) < 3:
            return None
        data = parts[3] if len(parts) > 3 else b""
        partial = parts[2] == b"P"
        return LogRecord(parts[1].decode(), parts[0].decode(), data if partial else data + b"\n", partial)
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    text = obj.get("log", "")
    return LogRecord(
        obj.get("stream", "stdout"), obj.get("time", ""), text.encode("utf-8"), not text.endswith("\n")
    )


def log_files(path: str) -> list[str]:
    """The current log and its rotated predecessors, oldest first."""
    files = []
    i = 1
    while os.path.exists(f"{path}.{i}"):
        files.append(f"{path}.{i}")
        i += 1
    files.reverse()
    if os.path.exists(path):
        files.append(path)
    return files


def read(
    path: str, driver: str, *, since: int | None = None, until: int | None = None, tail: int | None = None
) -> list[LogRecord]:
    """Every record (or the last ``tail``) between ``since`` and ``until`` (ns)."""
    records: list[LogRecord] = []
    for fp in log_files(path):
        try:
            with open(fp, "rb") as f:
                for line in f:
                    rec = _parse_line(driver, line)
                    if rec is not None and _in_window(rec, since, until):
                        records.append(rec)
        except FileNotFoundError:
            continue
    if tail is not None and tail >= 0:
        records = _tail_lines(records, tail)
    return records


def _tail_lines(records: list[LogRecord], n: int) -> list[LogRecord]:
    """The last ``n`` entries (docker counts log entries, as stored, not joined lines)."""
    return records[-n:] if n else []


def _in_window(rec: LogRecord, since: int | None, until: int | None) -> bool:
    if since is None and until is None:
        return True
    try:
        t = _parse_time_ns(rec.time)
    except ValueError:
        return True
    return (since is None or t >= since) and (until is None or t <= until)


def follow(
    path: str, driver: str, *, start_offset: int, start_inode: int, still_running, poll: float = 0.1
) -> Iterator[LogRecord]:
    """Yield records appended after ``start_offset`` until ``still_running()`` turns False.

    Survives rotation: when the file at ``path`` is replaced, the old one is read to its end
    and reading continues at the start of the new one.
    """
    f = None
    inode = start_inode
    try:
        try:
            f = open(path, "rb")  # noqa: SIM115
            if os.fstat(f.fileno()).st_ino == inode:
                f.seek(start_offset)
            inode = os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            f = None
        buf = b""
        idle_after_exit = 0
        while True:
            progressed = False
            if f is not None:
                chunk = f.read(65536)
                if chunk:
                    progressed = True
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        rec = _parse_line(driver, line + b"\n")
                        if rec is not None:
                            yield rec
            if not progressed:
                try:
                    st = os.stat(path)
                    if f is None or st.st_ino != inode:
                        if f is not None:
                            f.close()
                        f = open(path, "rb")  # noqa: SIM115
                        inode = os.fstat(f.fileno()).st_ino
                        buf = b""
                        continue
                except FileNotFoundError:
                    pass
                if not still_running():
                    idle_after_exit += 1
                    if idle_after_exit > 1:
                        return
                    continue
                time.sleep(poll)
    finally:
        if f is not None:
            f.close()
