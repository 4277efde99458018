"""Progress display: plain one-line events off a TTY, silence with -q, rich bars on a TTY."""

from __future__ import annotations

import io
import re
import threading

from pallet.cli import progress

A = "sha256:" + "1a2b3c4d5e6f" + "0" * 52
B = "sha256:" + "9f8e7d6c5b4a" + "1" * 52


def test_plain_rendering_is_one_line_per_event() -> None:
    out = io.StringIO()
    p = progress.create(out)
    assert isinstance(p, progress.PlainProgress), "a StringIO is not a terminal"
    p.start(A, total=3_000_000)
    p.start(B, total=10, kind="config")
    for _ in range(3):
        p.advance(A, 1_000_000)
    p.finish(A)
    p.finish(B, "skipped: already exists")
    p.finish(A)  # a second finish is ignored
    p.message("Writing manifest to image destination")
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "Copying blob 1a2b3c4d5e6f"
    assert lines[1] == "Copying config 9f8e7d6c5b4a"
    assert re.fullmatch(r"Copying blob 1a2b3c4d5e6f done \(3MB in \d+\.\ds\)", lines[2]), lines[2]
    assert lines[3] == "Copying config 9f8e7d6c5b4a skipped: already exists"
    assert lines[4:] == ["Writing manifest to image destination"]


def test_quiet_prints_nothing() -> None:
    out = io.StringIO()
    p = progress.create(out, quiet=True)
    p.start(A, 5)
    p.advance(A, 5)
    p.finish(A)
    p.message("x")
    p.close()
    assert out.getvalue() == ""


def test_plain_is_thread_safe() -> None:
    out = io.StringIO()
    p = progress.create(out)
    idents = [f"sha256:{i:064x}" for i in range(8)]

    def pull(ident: str) -> None:
        p.start(ident, 1000)
        for _ in range(100):
            p.advance(ident, 10)
        p.finish(ident)

    threads = [threading.Thread(target=pull, args=(i,)) for i in idents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 16 and all(
        re.fullmatch(r"Copying blob [0-9a-f]{12}( done \(1kB in \d+\.\ds\))?", x) for x in lines
    )


def test_tty_uses_rich_bars() -> None:
    out = io.StringIO()
    p = progress.create(out, tty=True)
    assert isinstance(p, progress.RichProgress)
    p.start(A, total=2048)
    p.advance(A, 2048)
    p.finish(A)
    p.close()
    text = out.getvalue()
    assert "Copying blob 1a2b3c4d5e6f done" in text and "2.0/2.0 kB" in text
