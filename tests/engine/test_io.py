"""Container I/O: exec, logs (json-file, k8s-file, rotation, follow), attach, interactive terminals
(a real pty), cp in both directions (path-safe), top, stats, port, commit, export."""

from __future__ import annotations

import fcntl
import io
import json
import os
import select
import signal
import struct
import subprocess
import tarfile
import termios
import time
from pathlib import Path

import pytest

from tests.engine.conftest import Pallet
from tests.support import terminal


def start_sleeper(pallet: Pallet, name: str, *extra: str) -> str:
    return pallet.ok("run", "-d", "--name", name, *extra, "small", "sleep", "300").strip()


# -- exec ----------------------------------------------------------------------------------------------


def test_exec_options_and_exit_statuses(pallet: Pallet) -> None:
    start_sleeper(pallet, "ex", "-e", "FROM_RUN=1")
    assert pallet.ok("exec", "ex", "sh", "-c", "echo $FROM_RUN; pwd; id -u") == "1\n/\n0\n"
    out = pallet.ok("exec", "-e", "X=y", "-w", "/data", "-u", "app", "ex", "sh", "-c", "echo $X; pwd; id")
    assert out.startswith("y\n/data\nuid=1000(app) gid=1000(app)")
    r = pallet("exec", "ex", "sh", "-c", "echo to-err >&2; exit 9")
    assert r.rc == 9 and r.err == "to-err\n"
    r = pallet("exec", "ex", "nope")
    assert r.rc == 127 and r.err.count("Error:") == 1
    r = pallet("exec", "ex", "/etc/motd")
    assert r.rc == 126
    r = pallet("exec", "-d", "ex", "nope")
    assert r.rc == 127 and r.err.count("Error:") == 1, r
    r = pallet("exec", "-t", "ex", "nope")
    assert r.rc == 127 and r.err.count("Error:") == 1, r
    assert pallet.ok("exec", "-i", "ex", "cat", input="piped\n") == "piped\n"
    assert pallet.ok("exec", "-d", "ex", "sh", "-c", "sleep 0.2; touch /tmp/detached") == ""
    deadline = time.monotonic() + 5
    while pallet("exec", "ex", "test", "-f", "/tmp/detached").rc != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pallet("exec", "ex", "test", "-f", "/tmp/detached").rc == 0
    status = pallet.ok("exec", "--privileged", "ex", "cat", "/proc/self/status")
    own = next(
        line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapBnd")
    )
    assert f"CapEff:\t{own.split()[1]}" in status
    pallet.ok("stop", "-t", "0", "ex")
    r = pallet("exec", "ex", "true")
    assert r.rc != 0 and "not running" in r.err


# -- logs ----------------------------------------------------------------------------------------------


def test_logs_json_file_format_tail_timestamps_since(pallet: Pallet) -> None:
    cid = (
        pallet.ok(
            "run", "--name", "lg", "small", "sh", "-c", "echo one; echo two >&2; printf 'no newline'"
        ).strip()
        and pallet.inspect("lg")["Id"]
    )
    info = pallet.inspect("lg")
    path = Path(info["LogPath"])
    assert path.name == f"{cid}-json.log"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["log"], e["stream"]) for e in lines] == [
        ("one\n", "stdout"),
        ("two\n", "stderr"),
        ("no newline", "stdout"),
    ]
    assert all(e["time"].endswith("Z") and len(e["time"]) == 30 for e in lines)
    r = pallet("logs", "lg")
    assert r.out == "one\nno newline" and r.err == "two\n"
    assert pallet.ok("logs", "--tail", "1", "lg") == "no newline"
    ts = pallet.ok("logs", "-t", "--tail", "1", "lg")
    assert ts.startswith(lines[2]["time"] + " ")
    assert pallet("logs", "--since", "1m", "lg").out == "one\nno newline"
    assert pallet("logs", "--since", "2099-01-01T00:00:00Z", "lg").out == ""
    assert pallet("logs", "--until", "2000-01-01T00:00:00Z", "lg").out == ""
    r = pallet("logs", "--since", "yesterday-ish", "lg")
    assert r.rc == 125


def test_logs_follow_until_exit(pallet: Pallet) -> None:
    pallet.ok(
        "run", "-d", "--name", "fl", "small", "sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.3; done"
    )
    t0 = time.monotonic()
    r = pallet("logs", "-f", "fl", timeout=30)
    assert r.rc == 0 and r.out == "line1\nline2\nline3\n"
    assert time.monotonic() - t0 < 15


def test_k8s_file_log_driver_and_rotation(pallet: Pallet) -> None:
    pallet.ok("run", "--name", "k8", "--log-driver", "k8s-file", "small", "sh", "-c", "echo a; echo b >&2")
    path = Path(pallet.inspect("k8")["LogPath"])
    assert path.name == "ctr.log"
    entries = path.read_text().splitlines()
    assert entries[0].split(" ", 1)[1] == "stdout F a"
    assert entries[1].split(" ", 1)[1] == "stderr F b"
    assert pallet("logs", "k8").out == "a\n"
    pallet.ok(
        "run",
        "--name",
        "rot",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=3",
        "small",
        "sh",
        "-c",
        "i=0; while [ $i -lt 200 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done",
    )
    log = Path(pallet.inspect("rot")["LogPath"])
    files = sorted(p.name for p in log.parent.iterdir() if p.name.startswith(log.name))
    assert files == [log.name, log.name + ".1", log.name + ".2"]
    for p in files:
        assert (log.parent / p).stat().st_size <= 2048
    out = pallet.ok("logs", "rot").splitlines()
    assert out[-1] == "line-199-xxxxxxxxxxxxxxxxxxxxxxxx" and len(out) < 200
    assert [int(x.split("-")[1]) for x in out] == list(range(200 - len(out), 200)), (
        "kept lines are the newest"
    )
    pallet.ok("run", "--name", "nolog", "--log-driver", "none", "small", "echo", "x")
    r = pallet("logs", "nolog")
    assert r.rc == 125 and "does not support reading" in r.err


# -- attach and terminals -------------------------------------------------------------------------------


def test_attach_relays_stdin_and_stdout(pallet: Pallet) -> None:
    pallet.ok("run", "-d", "-i", "--name", "cat", "small", "cat")
    p = pallet.popen("attach", "--sig-proxy=false", "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdin is not None and p.stdout is not None
        time.sleep(0.5)
        p.stdin.write(b"echoed back\n")
        p.stdin.flush()
        r, _, _ = select.select([p.stdout], [], [], 10)
        assert r, "no output from the attached container"
        assert p.stdout.readline() == b"echoed back\n"
    finally:
        p.kill()
        p.wait()
    assert pallet.inspect("cat")["State"]["Running"], "detaching the client leaves the container running"
    assert pallet.ok("logs", "cat") == "echoed back\n"


def test_run_interactive_stdin_pipe(pallet: Pallet) -> None:
    assert pallet.ok("run", "--rm", "-i", "small", "sh", "-c", "tr a-z A-Z", input="hello\n") == "HELLO\n"
    # without -i the container's stdin is empty
    assert pallet.ok("run", "--rm", "small", "cat", input="ignored\n") == ""


def _pty_session(pallet: Pallet, *args: str) -> tuple[int, int]:
    return terminal.spawn(pallet.argv(*args), pallet.env, cwd=pallet.env["PYTHONPATH"].split(os.pathsep)[0],
                          size=(30, 90))


_read_until = terminal.read_until


def test_run_it_gives_a_working_terminal_with_resize(pallet: Pallet) -> None:
    pid, fd = _pty_session(pallet, "run", "--rm", "-it", "--name", "term", "small", "sh")
    try:
        assert b"# " in _read_until(fd, b"# ")
        os.write(fd, b"stty size; tty; echo $TERM; echo mark-$((6*7))\r")
        out = _read_until(fd, b"mark-42")
        assert b"30 90" in out and b"/dev/pts/0" in out and b"xterm" in out
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 52, 120, 0, 0))
        os.kill(pid, signal.SIGWINCH)
        time.sleep(0.3)
        os.write(fd, b"stty size\r")
        assert b"52 120" in _read_until(fd, b"52 120")
        os.write(fd, b"exit 6\r")
        _read_until(fd, b"\0", timeout=5)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 6
    assert pallet.ok("ps", "-aq") == ""


def test_detach_keys_and_attach_to_a_terminal(pallet: Pallet) -> None:
    pid, fd = _pty_session(pallet, "run", "-it", "--name", "dt", "small", "sh")
    try:
        _read_until(fd, b"# ")
        os.write(fd, b"\x10\x11")  # ctrl-p ctrl-q
        _read_until(fd, b"\0", timeout=5)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pallet.inspect("dt")["State"]["Running"]
    pid, fd = _pty_session(pallet, "attach", "dt")
    try:
        time.sleep(0.3)
        os.write(fd, b"echo re-$((1+1))joined\r")
        assert b"re-2joined" in _read_until(fd, b"re-2joined")
        os.write(fd, b"exit 3\r")
        _read_until(fd, b"\0", timeout=5)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 3


def test_exec_it_terminal(pallet: Pallet) -> None:
    start_sleeper(pallet, "xt")
    pid, fd = _pty_session(pallet, "exec", "-it", "xt", "sh")
    try:
        _read_until(fd, b"# ")
        os.write(fd, b"tty; stty size; exit 4\r")
        out = _read_until(fd, b"\0", timeout=10)
        assert b"/dev/pts/" in out and b"30 90" in out
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 4


# -- cp ----------------------------------------------------------------------------------------------------


def test_cp_both_directions(pallet: Pallet, tmp_path: Path) -> None:
    start_sleeper(pallet, "cp1", "-v", "cpvol:/vol")
    pallet.ok("cp", "cp1:/data/keep", str(tmp_path))
    assert (tmp_path / "keep" / "a.txt").read_text() == "kept\n"
    pallet.ok("cp", "cp1:/etc/motd", str(tmp_path / "renamed"))
    assert (tmp_path / "renamed").read_text() == "hello from the small fixture\n"
    pallet.ok("cp", "cp1:/data/keep/.", str(tmp_path / "contents"))
    assert (tmp_path / "contents" / "a.txt").exists()
    pallet.ok("cp", "cp1:/data/rel-link", str(tmp_path))
    assert os.readlink(tmp_path / "rel-link") == "keep/a.txt", "symlinks are copied as links"
    src = tmp_path / "up"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("up\n")
    os.chmod(src / "sub" / "f", 0o640)
    pallet.ok("cp", str(src), "cp1:/newdir")
    assert pallet.ok("exec", "cp1", "stat", "-c", "%a %u %n", "/newdir/sub/f") == "640 0 /newdir/sub/f\n"
    pallet.ok("cp", str(src / "sub" / "f"), "cp1:/vol/")
    assert pallet.ok("exec", "cp1", "cat", "/vol/f") == "up\n", "copies land in volumes mounted there"
    r = pallet("cp", "cp1:/no/such/file", str(tmp_path))
    assert r.rc == 125 and "could not find" in r.err
    r = pallet("cp", str(src), "cp1:/etc/motd")
    assert r.rc == 125 and "cannot copy a directory to a file" in r.err
    r = pallet("cp", str(tmp_path / "renamed"), str(tmp_path / "x"))
    assert r.rc == 125
    r = pallet("cp", "cp1:/etc/motd", str(tmp_path / "absent" / "x"))
    assert r.rc == 125 and f"destination directory {tmp_path / 'absent'} does not exist" in r.err, r
    r = pallet("cp", str(src / "sub" / "f"), "cp1:/absent/x")
    assert r.rc == 125 and "destination directory /absent does not exist in the container" in r.err, r
    r = pallet("cp", str(src / "sub" / "f"), "cp1:/absent/")
    assert r.rc == 125 and "destination directory /absent/ does not exist in the container" in r.err, r
    # a tar stream on stdout and back in
    tar = subprocess.run(pallet.argv("cp", "cp1:/data/keep", "-"), env=pallet.env, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        assert sorted(tf.getnames()) == ["keep", "keep/a.txt"]
    pallet.ok("cp", "-", "cp1:/tmp", input=tar)
    assert pallet.ok("exec", "cp1", "cat", "/tmp/keep/a.txt") == "kept\n"


def test_cp_cannot_escape_the_container(pallet: Pallet, tmp_path: Path) -> None:
    start_sleeper(pallet, "esc")
    # symlinks planted in the container point at "/" and at host-looking paths
    pallet.ok(
        "exec",
        "esc",
        "sh",
        "-c",
        "ln -s / /escape; ln -s /../../../../tmp /tmplink; mkdir -p /target; ln -s /etc /target/etclink",
    )
    host_secret = tmp_path / "secret"
    host_secret.write_text("host only\n")
    # reading through a symlink resolves inside the container
    pallet.ok("cp", "esc:/escape/etc/hostname", str(tmp_path / "got"))
    assert (tmp_path / "got").read_text() == pallet.ok("exec", "esc", "cat", "/etc/hostname")
    r = pallet("cp", f"esc:/escape{host_secret}", str(tmp_path / "leak"))
    assert r.rc != 0 and not (tmp_path / "leak").exists()
    # writing through a symlink lands inside the container, never on the host
    (tmp_path / "payload").write_text("payload\n")
    pallet.ok("exec", "esc", "mkdir", "-p", f"/tmp{tmp_path}")
    pallet.ok("cp", str(tmp_path / "payload"), f"esc:/tmplink{tmp_path}/dropped")
    assert not (tmp_path / "dropped").exists()
    assert pallet.ok("exec", "esc", "cat", f"/tmp{tmp_path}/dropped") == "payload\n"
    pallet.ok("cp", str(tmp_path / "payload"), "esc:/target/etclink/payload")
    assert pallet.ok("exec", "esc", "cat", "/etc/payload") == "payload\n"
    assert not Path("/etc/payload").exists()
    # a symlink copied out stays a symlink: nothing is written through it
    pallet.ok("exec", "esc", "sh", "-c", "mkdir -p /evil && ln -s /etc /evil/link")
    out = tmp_path / "out"
    out.mkdir()
    pallet.ok("cp", "esc:/evil", str(out))
    assert os.readlink(out / "evil" / "link") == "/etc"


def test_cp_with_a_stopped_container(pallet: Pallet, tmp_path: Path) -> None:
    pallet.ok(
        "run",
        "--name",
        "stopped",
        "-v",
        "sv:/vol",
        "small",
        "sh",
        "-c",
        "echo inside > /vol/v; echo changed > /etc/motd",
    )
    pallet.ok("cp", "stopped:/etc/motd", str(tmp_path / "motd"))
    assert (tmp_path / "motd").read_text() == "changed\n"
    pallet.ok("cp", "stopped:/vol/v", str(tmp_path / "v"))
    assert (tmp_path / "v").read_text() == "inside\n"
    (tmp_path / "new").write_text("new\n")
    pallet.ok("cp", str(tmp_path / "new"), "stopped:/root/")
    pallet.ok("cp", "stopped:/root/new", str(tmp_path / "back"))
    assert (tmp_path / "back").read_text() == "new\n"
    assert [m for m in pallet.leaks() if m.startswith("mount")] == [], "the rootfs is unmounted again"
    assert pallet.inspect("stopped")["State"]["Status"] == "exited"


# -- top, stats, port --------------------------------------------------------------------------------------


def test_top_stats_port(pallet: Pallet) -> None:
    start_sleeper(pallet, "mon", "-m", "32m")
    top = pallet.ok("top", "mon").splitlines()
    assert top[0].split()[:3] == ["UID", "PID", "PPID"]
    assert len(top) == 2 and top[1].endswith("sleep 300")
    top = pallet.ok("top", "mon", "-o", "pid,comm").splitlines()
    assert top[0].split() == ["PID", "COMMAND"] and top[1].split()[1] == "sleep"
    out = pallet.ok("stats", "--no-stream", "mon").splitlines()
    assert out[0].split()[:3] == ["CONTAINER", "ID", "NAME"]
    row = out[1]
    assert "mon" in row and "/ 32MiB" in row and row.split()[-1] == "1"
    js = json.loads(pallet.ok("stats", "--no-stream", "--format", "json", "mon"))
    assert js["Name"] == "mon" and js["PIDs"] == "1" and js["MemUsage"].endswith("/ 32MiB")
    assert pallet.ok("port", "mon") == ""
    r = pallet("run", "--rm", "--network", "none", "-p", "8080:80", "small", "true")
    assert r.rc == 125 and "bridge" in r.err


# -- commit and export --------------------------------------------------------------------------------------


def test_commit_makes_a_runnable_image(pallet: Pallet) -> None:
    pallet.ok(
        "run",
        "--name",
        "base",
        "-e",
        "KEPT=1",
        "small",
        "sh",
        "-c",
        "echo committed > /etc/motd; rm /data/keep/a.txt; rm -r /data/replaced",
    )
    image_id = pallet.ok(
        "commit",
        "-m",
        "my change",
        "-a",
        "me",
        "-c",
        'CMD ["cat", "/etc/motd"]',
        "-c",
        "ENV ADDED=2",
        "base",
        "mine:v1",
    ).strip()
    assert image_id.startswith("sha256:")
    assert pallet.ok("run", "--rm", "mine:v1") == "committed\n"
    out = pallet.ok(
        "run",
        "--rm",
        "mine:v1",
        "sh",
        "-c",
        "ls /data/keep | wc -l; test -e /data/replaced || "
        "echo gone; echo $KEPT $ADDED; cat /data/keep/../linked.txt",
    )
    assert out == "0\ngone\n1 2\nhardlinked\n"
    # --change is parsed as import parses it (pallet.images.changes): a bad one makes no image
    images_before = pallet.ok("images", "-q", "--no-trunc")
    r = pallet("commit", "-c", "RUN make", "base", "mine:bad")
    assert r.rc == 125 and "unknown instruction 'RUN'" in r.err and len(r.err.splitlines()) == 1, r
    assert pallet.ok("images", "-q", "--no-trunc") == images_before
    assert pallet("inspect", "mine:bad").rc != 0


def test_export_gives_the_whole_filesystem(pallet: Pallet, tmp_path: Path) -> None:
    pallet.ok(
        "run", "--name", "exp", "-v", "ev:/vol", "small", "sh", "-c", "echo x > /created; echo v > /vol/v"
    )
    pallet.ok("export", "-o", str(tmp_path / "fs.tar"), "exp")
    with tarfile.open(tmp_path / "fs.tar") as tf:
        names = set(tf.getnames())
        assert {"bin/busybox", "etc/motd", "created", "data/keep/a.txt"} <= names
        assert "vol/v" not in names, "volumes are not part of export"
        assert "data/gone.txt" not in names
        assert tf.getmember("data/setuid-bin").mode & 0o4000
        assert tf.getmember("data/owned-by-app").uid == 1000
    r = subprocess.run(pallet.argv("export", "exp"), env=pallet.env, capture_output=True)
    assert r.returncode == 0 and r.stdout[:512] == (tmp_path / "fs.tar").read_bytes()[:512]


@pytest.mark.parametrize("cmd", [("info",), ("version",), ("system", "info")])
def test_info_and_version(pallet: Pallet, cmd: tuple[str, ...]) -> None:
    out = pallet.ok(*cmd)
    assert "pallet" in out.lower() or "Containers:" in out
    js = json.loads(pallet.ok(*cmd, "--format", "json"))
    assert isinstance(js, dict)
    if cmd[0] == "info" or cmd == ("system", "info"):
        assert js["DefaultRuntime"] == "runc" and js["CgroupDriver"] == "cgroupfs"
        assert pallet.ok(*cmd, "-f", "{{.Containers}}") == "0\n"


def test_output_reader_going_away_ends_run_not_the_container(pallet: Pallet) -> None:
    """``pallet run ... | head -1``: when the reader of our output goes away the CLI ends at
    once with the status a shell reports for docker's CLI killed by SIGPIPE (141), and the
    container keeps running; its monitor still applies --rm when it exits. ``stop``/``kill`` of
    a --rm container succeed though the container is gone when they look again, as docker's."""
    p = pallet.popen("run", "--rm", "--name", "chatty", "small", "sh", "-c", "while true; do echo y; done",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None
    assert p.stdout.readline() == b"y\n"
    p.stdout.close()
    assert p.wait(timeout=15) == 141
    assert pallet.inspect("chatty")["State"]["Running"] is True
    assert pallet.ok("kill", "chatty") == "chatty\n"
    deadline = time.monotonic() + 15
    while pallet("container", "inspect", "chatty").rc == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pallet("container", "inspect", "chatty").rc != 0, "removed by its monitor (--rm)"
    pallet.ok("run", "-d", "--rm", "--name", "stoppable", "small", "sleep", "300")
    assert pallet.ok("stop", "-t", "1", "stoppable") == "stoppable\n"
    assert pallet.leaks() == []
