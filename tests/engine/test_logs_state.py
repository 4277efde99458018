"""Log files (docker's json-file, CRI's k8s-file, rotation), the state database under concurrent
writers, the attach framing, and the path guard of cp's extraction. No container is started."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import tarfile
import time
from pathlib import Path

import pytest

from pallet.engine import attach, logs
from pallet.engine.copy import CopyError, _extract
from pallet.engine.state import Container, State, now_rfc3339


def test_json_file_lines_partials_and_long_lines(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    w = logs.LogWriter(str(path), "json-file")
    w.write("stdout", b"hello\nwor")
    w.write("stderr", b"oops\n")
    w.write("stdout", b"ld\n" + b"x" * (logs.MAX_LINE + 10) + b"\n")
    w.write("stdout", b"tail without newline")
    w.close()
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["stream"], e["log"][:12]) for e in entries] == [
        ("stdout", "hello\n"),
        ("stderr", "oops\n"),
        ("stdout", "world\n"),
        ("stdout", "x" * 12),
        ("stdout", "x" * 10 + "\n"),
        ("stdout", "tail without"),
    ]
    assert len(entries[3]["log"]) == logs.MAX_LINE and not entries[3]["log"].endswith("\n")
    assert entries[4]["log"] == "x" * 10 + "\n"
    assert entries[5]["log"] == "tail without newline"
    recs = logs.read(str(path), "json-file")
    assert b"".join(r.data for r in recs if r.stream == "stdout") == (
        b"hello\nworld\n" + b"x" * (logs.MAX_LINE + 10) + b"\ntail without newline"
    )
    assert [r.data for r in logs.read(str(path), "json-file", tail=2)] == [
        b"x" * 10 + b"\n",
        b"tail without newline",
    ]


def test_invalid_utf8_and_k8s_file(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    w = logs.LogWriter(str(path), "k8s-file")
    w.write("stdout", b"caf\xc3\xa9\n\xff\n")
    w.write("stderr", b"partial")
    w.close()
    lines = path.read_bytes().splitlines()
    ts, stream, tag, text = lines[0].split(b" ", 3)
    assert (stream, tag, text) == (b"stdout", b"F", "café".encode())
    assert ts[10:11] == b"T" and (ts[-6:-5] in (b"+", b"-"))
    assert lines[2].split(b" ", 3)[1:] == [b"stderr", b"P", b"partial"]
    recs = logs.read(str(path), "k8s-file")
    assert [r.data for r in recs] == ["café\n".encode(), b"\xff\n", b"partial"]


def test_rotation_keeps_max_file_files_under_max_size(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    w = logs.LogWriter(str(path), "json-file", max_size=1000, max_file=3)
    for i in range(100):
        w.write("stdout", f"line {i:03d}\n".encode())
    w.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["r.log", "r.log.1", "r.log.2"]
    assert all((tmp_path / f).stat().st_size <= 1000 for f in files)
    recs = logs.read(str(path), "json-file")
    numbers = [int(r.data.split()[1]) for r in recs]
    assert numbers == list(range(100 - len(numbers), 100)) and len(numbers) > 20
    w = logs.LogWriter(str(tmp_path / "one.log"), "json-file", max_size=200, max_file=1)
    for i in range(50):
        w.write("stdout", f"{i}\n".encode())
    w.close()
    assert (tmp_path / "one.log").stat().st_size <= 200 and not (tmp_path / "one.log.1").exists()


def test_since_parsing() -> None:
    now = 1_700_000_000 * 10**9
    assert logs.parse_since("10m", now) == now - 600 * 10**9
    assert logs.parse_since("1700000000", now) == now
    assert logs.parse_since("2023-11-14T22:13:20Z", now) == now
    assert logs.parse_since("2023-11-14T23:13:20+01:00", now) == now
    assert logs.parse_since("2023-11-14", now) == (now // 10**9 - 80000) * 10**9
    assert logs.parse_since(None) is None


def _insert_and_flip(root: str, n: int, worker: int) -> None:
    st = State(Path(root))
    for i in range(n):
        cid = hashlib.sha256(f"{worker}-{i}".encode()).hexdigest()
        st.insert(
            Container(
                id=cid,
                name=f"w{worker}-{i}",
                image="img",
                image_id="sha256:x",
                created=now_rfc3339(),
                config={"k": i},
            )
        )
        assert st.transition(cid, ("created",), status="running")
        assert not st.transition(cid, ("created",), status="running"), "compare-and-set"
        st.update(cid, status="exited", exit_code=i)


def test_state_is_safe_under_concurrent_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_insert_and_flip, args=(str(tmp_path), 25, w)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    st = State(tmp_path)
    rows = st.list()
    assert len(rows) == 150 and all(c.status == "exited" for c in rows)
    assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    c = st.get("w3-7")
    assert c.exit_code == 7 and st.get(c.id[:20]).id == c.id
    from pallet.engine.errors import NameConflict, NoSuchContainer

    with pytest.raises(NoSuchContainer, match="ambiguous"):
        st.get("0")
    with pytest.raises(NameConflict):
        st.insert(Container(id="f" * 64, name="w0-0", image="i", image_id="x", created="", config={}))


def test_attach_frames_roundtrip() -> None:
    data = (
        attach.frame(attach.STDOUT, b"abc")
        + attach.jframe(attach.EXIT, {"ExitCode": 3})
        + attach.frame(attach.STDIN_EOF)
    )
    r = attach.FrameReader()
    out = []
    for i in range(len(data)):  # byte by byte: frames survive arbitrary splits
        out += list(r.feed(data[i : i + 1]))
    assert out == [(attach.STDOUT, b"abc"), (attach.EXIT, b'{"ExitCode":3}'), (attach.STDIN_EOF, b"")]


def _tar(entries: list[tuple[str, str, str]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, value in entries:
            ti = tarfile.TarInfo(name)
            if kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, value
                tf.addfile(ti)
            else:
                data = value.encode()
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    return buf


@pytest.mark.parametrize(
    "entries",
    [
        [("../escaped", "file", "x")],
        [("/abs/escaped", "file", "x")],
        [("link", "sym", "OUTSIDE"), ("link/escaped", "file", "x")],
        [("rel", "sym", "../outside"), ("rel/escaped", "file", "x")],
    ],
)
def test_extract_refuses_to_write_outside_the_destination(tmp_path: Path, entries: list) -> None:
    """The tar a copy extracts may be hostile (``cp -`` from stdin, or a container racing the
    walk that produced it): an entry that lands outside is refused before anything is written;
    a leading ``/`` is only stripped."""
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    entries = [(n, k, v.replace("OUTSIDE", str(outside))) for n, k, v in entries]
    if entries[0][0].startswith("/"):
        _extract(_tar(entries), str(dest), rebase=None, archive=False, uid=0, gid=0)
        assert (dest / "abs" / "escaped").read_text() == "x"
    else:
        with pytest.raises(CopyError, match="outside"):
            _extract(_tar(entries), str(dest), rebase=None, archive=False, uid=0, gid=0)
    assert list(outside.iterdir()) == [] and not (tmp_path / "escaped").exists()
    assert not Path("/abs/escaped").exists()


def test_now_format() -> None:
    t = now_rfc3339()
    assert len(t) == 30 and t.endswith("Z") and t[4] == "-"
    assert logs._parse_time_ns(t) <= time.time_ns()
