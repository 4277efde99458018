"""Seccomp profiles loaded into real forked children: every action, argument conditions, flags,
the ENOSYS stub, NOTIFY end to end with a listener, and Docker's default profile running busybox."""

from __future__ import annotations

import array
import ctypes
import errno
import json
import os
import shutil
import signal
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pallet.errors import RuntimeFailure
from pallet.runtime import seccomp

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
PR_SET_NO_NEW_PRIVS = 38
DOCKER_PROFILE = Path(__file__).parent / "data" / "docker-default-seccomp.json"
BUSYBOX = shutil.which("busybox")
X86_64 = os.uname().machine == "x86_64"
NR = {name: seccomp._lib().seccomp_syscall_resolve_name(name.encode())  # this machine's numbers
      for name in ("mkdir", "mkdirat", "reboot", "clone3", "uname", "getppid")}


def allow(*rules: dict, **extra) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": list(rules), **extra}


def run_child(filt: seccomp.Filter | None, body: Callable[[int], int | None], *, nnp: bool = True,
              before: Callable[[], None] | None = None) -> tuple[str, int, bytes]:
    """Fork; the child sets no_new_privs, loads ``filt`` and runs ``body(write_fd)``; its return
    value is the exit status. Returns ("exit", status, output) or ("signal", signo, output)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 250
        try:
            os.close(r)
            if before:
                before()
            if nnp:
                LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            if filt is not None:
                seccomp.load(filt)
            code = body(w) or 0
        except BaseException as e:
            try:
                os.write(w, f"child error: {e!r}".encode())
            except BaseException:
                pass
        finally:
            os._exit(code)
    os.close(w)
    out = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "signal", os.WTERMSIG(status), out
    return "exit", os.WEXITSTATUS(status), out


def errno_of(fn: Callable[[], object]) -> int:
    try:
        fn()
    except OSError as e:
        return e.errno
    return 0


def ctypes_errno(rc: int) -> int:
    return ctypes.get_errno() if rc == -1 else 0


def getppid() -> int:
    """getppid(2) through syscall(3), which sets errno (glibc's getppid() cannot fail)."""
    return LIBC.syscall(ctypes.c_long(NR["getppid"]))


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path / "made-by-child"


# --- actions -------------------------------------------------------------------------------------

def test_errno_action_default_eperm_and_errno_ret(scratch):
    filt = seccomp.compile_profile(allow({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}))
    assert run_child(filt, lambda w: errno_of(lambda: os.mkdir(scratch)))[:2] == ("exit", errno.EPERM)
    filt = seccomp.compile_profile(allow({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                          "errnoRet": errno.EDQUOT}))
    assert run_child(filt, lambda w: errno_of(lambda: os.mkdir(scratch)))[:2] == ("exit", errno.EDQUOT)
    assert not scratch.exists()
    # without a filter the same child succeeds
    assert run_child(None, lambda w: errno_of(lambda: os.mkdir(scratch)))[:2] == ("exit", 0)
    assert scratch.is_dir()


def test_default_errno_ret():
    filt = seccomp.compile_profile({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOTTY,
                                    "syscalls": [{"names": ["exit_group", "exit", "write"],
                                                  "action": "SCMP_ACT_ALLOW"}]})

    kind, code, _ = run_child(filt, lambda w: ctypes_errno(LIBC.syscall(ctypes.c_long(NR["uname"]), None)))
    assert (kind, code) == ("exit", errno.ENOTTY)


def kill_body(w: int) -> int:
    LIBC.getppid()
    os.write(w, b"survived")
    return 0


def test_kill_process_and_kill_thread():
    for action in ("SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL"):
        filt = seccomp.compile_profile(allow({"names": ["getppid"], "action": action}))
        kind, sig, out = run_child(filt, kill_body)
        assert (kind, sig, out) == ("signal", signal.SIGSYS, b""), action

    # in a second thread: KILL_THREAD kills that thread only, KILL_PROCESS all of it
    def threaded(w: int) -> int:
        t = threading.Thread(target=LIBC.getppid, daemon=True)  # ctypes drops the GIL
        t.start()
        t.join(1.0)
        os.write(w, b"main survived")
        return 42

    filt = seccomp.compile_profile(allow({"names": ["getppid"], "action": "SCMP_ACT_KILL_THREAD"}))
    assert run_child(filt, threaded) == ("exit", 42, b"main survived")
    filt = seccomp.compile_profile(allow({"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}))
    assert run_child(filt, threaded)[:2] == ("signal", signal.SIGSYS)


def test_trap_delivers_a_catchable_sigsys():
    filt = seccomp.compile_profile(allow({"names": ["getppid"], "action": "SCMP_ACT_TRAP"}))
    got = []

    def body(w: int) -> int:
        signal.signal(signal.SIGSYS, lambda s, f: got.append(s))
        rc = LIBC.getppid()
        os.write(w, f"{rc} {got}".encode())
        return 7

    kind, code, out = run_child(filt, body)
    assert (kind, code) == ("exit", 7)
    assert out.decode().endswith(f"[{int(signal.SIGSYS)}]")  # handled, the process lived on


def test_trace_without_tracer_fails_with_enosys():
    filt = seccomp.compile_profile(allow({"names": ["getppid"], "action": "SCMP_ACT_TRACE", "errnoRet": 5}))
    assert run_child(filt, lambda w: ctypes_errno(getppid()))[:2] == ("exit", errno.ENOSYS)


def kmsg_records() -> list[str]:
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    out = []
    try:
        while True:
            try:
                out.append(os.read(fd, 8192).decode(errors="replace"))
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:  # overwritten record: keep reading
                    continue
                raise
    finally:
        os.close(fd)
    return out


def test_log_action_allows_and_audits(scratch):
    filt = seccomp.compile_profile(allow({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_LOG"}))
    pids = []

    def body(w):
        os.write(w, str(os.getpid()).encode())
        return errno_of(lambda: os.mkdir(scratch))

    kind, code, out = run_child(filt, body)
    assert (kind, code) == ("exit", 0) and scratch.is_dir()
    pids.append(int(out))
    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("cannot read /dev/kmsg to see the audit record")
    recs = [r for r in kmsg_records() if f"pid={pids[0]} " in r and "type=1326" in r]
    assert recs and "code=0x7ffc0000" in recs[-1]
    assert any(f"syscall={NR[n]} " in recs[-1] for n in ("mkdir", "mkdirat"))


# --- argument conditions -------------------------------------------------------------------------

CLOSE_PROBES = (599, 600, 601)  # descriptors that are not open: close() says EBADF unless filtered
EXPECT = {"SCMP_CMP_EQ": (0, 1, 0), "SCMP_CMP_NE": (1, 0, 1), "SCMP_CMP_LT": (1, 0, 0),
          "SCMP_CMP_LE": (1, 1, 0), "SCMP_CMP_GT": (0, 0, 1), "SCMP_CMP_GE": (0, 1, 1)}


@pytest.mark.parametrize("op", sorted(EXPECT))
def test_comparison_operators(op):
    filt = seccomp.compile_profile(allow({"names": ["close"], "action": "SCMP_ACT_ERRNO", "errnoRet": 99,
                                          "args": [{"index": 0, "value": 600, "op": op}]}))

    def body(w):
        res = [errno_of(lambda fd=fd: os.close(fd)) for fd in CLOSE_PROBES]
        os.write(w, json.dumps(res).encode())

    kind, code, out = run_child(filt, body)
    assert (kind, code) == ("exit", 0), out
    assert json.loads(out) == [99 if hit else errno.EBADF for hit in EXPECT[op]]


def test_masked_eq_on_open_flags(tmp_path):
    existing = tmp_path / "exists"
    existing.write_text("x")
    o_creat = os.O_CREAT
    filt = seccomp.compile_profile(allow(
        {"names": ["openat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EROFS,
         "args": [{"index": 2, "value": o_creat, "valueTwo": o_creat, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["open"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EROFS,
         "args": [{"index": 1, "value": o_creat, "valueTwo": o_creat, "op": "SCMP_CMP_MASKED_EQ"}]}))

    def body(w):
        res = [errno_of(lambda: os.close(os.open(existing, os.O_RDONLY))),
               errno_of(lambda: os.close(os.open(tmp_path / "new", os.O_WRONLY | os.O_CREAT)))]
        os.write(w, json.dumps(res).encode())

    assert json.loads(run_child(filt, body)[2]) == [0, errno.EROFS]
    assert not (tmp_path / "new").exists()


def socket_results(w: int) -> None:
    res = []
    for fam, typ in ((socket.AF_INET, socket.SOCK_STREAM), (socket.AF_INET, socket.SOCK_DGRAM),
                     (socket.AF_INET6, socket.SOCK_DGRAM), (socket.AF_UNIX, socket.SOCK_DGRAM)):
        fd = LIBC.socket(fam, typ, 0)
        res.append(ctypes.get_errno() if fd < 0 else 0)
        if fd >= 0:
            os.close(fd)
    os.write(w, json.dumps(res).encode())


def test_args_on_one_rule_are_anded():
    args = [{"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"},
            {"index": 1, "value": socket.SOCK_DGRAM, "op": "SCMP_CMP_EQ"}]
    filt = seccomp.compile_profile(allow({"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                                          "errnoRet": errno.EACCES, "args": args}))
    assert json.loads(run_child(filt, socket_results)[2]) == [0, errno.EACCES, 0, 0]


def test_conditions_on_the_same_arg_are_ored_like_runc():
    filt = seccomp.compile_profile(allow({"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                                          "errnoRet": errno.EACCES, "args": [
                                              {"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"},
                                              {"index": 0, "value": socket.AF_INET6, "op": "SCMP_CMP_EQ"}]}))
    assert json.loads(run_child(filt, socket_results)[2]) == [errno.EACCES, errno.EACCES, errno.EACCES, 0]


def test_personality_query_only_denied():
    filt = seccomp.compile_profile(allow({"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                                          "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]}))

    def body(w):
        q = LIBC.personality(ctypes.c_ulong(0xFFFFFFFF))
        qe = ctypes.get_errno() if q == -1 else 0
        s = LIBC.personality(ctypes.c_ulong(0))
        os.write(w, json.dumps([qe, s]).encode())

    assert json.loads(run_child(filt, body)[2]) == [errno.EPERM, 0]


# --- whole profiles ------------------------------------------------------------------------------

ALLOWLIST = ["execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq", "mmap",
             "munmap", "mprotect", "read", "write", "writev", "open", "openat", "close", "fstat",
             "newfstatat", "stat", "lstat", "statx", "ioctl", "rt_sigaction", "rt_sigprocmask",
             "rt_sigreturn", "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid", "getegid",
             "uname", "exit_group", "exit", "wait4", "clone", "fork", "vfork", "fcntl", "dup2", "dup3",
             "lseek", "getcwd", "prlimit64", "sigaltstack", "readlink", "poll", "access", "faccessat",
             "getdents64", "pread64", "futex", "sendfile", "getrandom", "pipe", "pipe2", "madvise"]


@pytest.mark.skipif(BUSYBOX is None, reason="needs busybox")
def test_default_errno_with_allow_list_still_execs_busybox(tmp_path):
    filt = seccomp.compile_profile({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ALLOWLIST, "action": "SCMP_ACT_ALLOW"}]})
    target = tmp_path / "denied"

    def body(w):
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.execv(BUSYBOX, ["sh", "-c", f"echo hello; grep ^Seccomp /proc/self/status; mkdir {target}"])

    _, code, out = run_child(filt, body)
    text = out.decode()
    assert text.startswith("hello\n"), text
    assert "Seccomp:\t2" in text and "Seccomp_filters:\t1" in text
    assert "Operation not permitted" in text and code != 0
    assert not target.exists()


@pytest.mark.skipif(BUSYBOX is None or not X86_64, reason="needs busybox on x86_64")
def test_docker_default_profile_runs_busybox(tmp_path):
    profile = json.loads(DOCKER_PROFILE.read_text())
    filt = seccomp.compile_profile(profile)
    assert set(filt.skipped) <= {"getxattrat", "listmount", "listxattrat", "mseal", "removexattrat",
                                 "riscv_hwprobe", "setxattrat", "statmount", "uretprobe", "lsm_get_self_attr",
                                 "lsm_set_self_attr", "lsm_list_modules", "file_getattr", "file_setattr",
                                 "open_tree_attr"}
    script = (f"mkdir {tmp_path}/ok && echo mkdir-ok; ls / >/dev/null && echo ls-ok; "
              "grep ^Seccomp: /proc/self/status; unshare -m true; echo unshare=$?")

    def body(w):
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.execv(BUSYBOX, ["sh", "-c", script])

    kind, code, out = run_child(filt, body)
    text = out.decode()
    assert (kind, code) == ("exit", 0), text
    assert "mkdir-ok" in text and "ls-ok" in text and "Seccomp:\t2" in text
    assert "unshare=1" in text and "Operation not permitted" in text  # needs CAP_SYS_ADMIN in docker

    def syscalls(w):
        res = [ctypes_errno(LIBC.syscall(ctypes.c_long(nr), None, None)) for nr in
               (NR["clone3"], NR["reboot"], 1000)]
        os.write(w, json.dumps(res).encode())

    # clone3: the profile's own ENOSYS; reboot: the default EPERM; 1000: newer than anything
    # the profile names, so the ENOSYS stub answers (glibc then falls back)
    assert json.loads(run_child(filt, syscalls)[2]) == [errno.ENOSYS, errno.EPERM, errno.ENOSYS]
    nostub = seccomp.compile_profile(profile, enosys_stub=False)
    assert len(nostub) < len(filt)
    assert json.loads(run_child(nostub, syscalls)[2]) == [errno.ENOSYS, errno.EPERM, errno.EPERM]


def test_tsync_filters_every_thread(scratch):
    def body_for(w):
        box = {}
        go = threading.Event()

        def worker():
            go.wait()
            box["errno"] = errno_of(lambda: os.mkdir(scratch))

        t = threading.Thread(target=worker)
        t.start()
        return t, go, box

    results = {}
    for flags in ([], ["SECCOMP_FILTER_FLAG_TSYNC"]):
        filt = seccomp.compile_profile(allow({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
                                             flags=flags))
        holder = {}

        def before(holder=holder):
            holder["t"], holder["go"], holder["box"] = body_for(None)

        def body(w, holder=holder):
            holder["go"].set()
            holder["t"].join()
            os.write(w, str(holder["box"]["errno"]).encode())

        results[bool(flags)] = int(run_child(filt, body, before=before)[2])
        if scratch.exists():
            scratch.rmdir()
    assert results == {False: 0, True: errno.EPERM}  # only TSYNC reaches the other thread


def test_every_supported_flag_loads():
    feats = seccomp.features()
    assert feats["enabled"]
    for flag in feats["supportedFlags"]:
        profile = allow({"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}, flags=[flag])
        if flag == "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV":
            profile["syscalls"].append({"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"})
            profile["listenerPath"] = "/nonexistent"
        filt = seccomp.compile_profile(profile)
        assert run_child(filt, lambda w: ctypes_errno(getppid()))[:2] == ("exit", errno.EPERM), flag


def test_load_without_no_new_privs_or_cap_sys_admin_says_why():
    filt = seccomp.compile_profile(allow({"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}))

    def body(w):
        os.setuid(65534)  # no capabilities left
        try:
            seccomp.load(filt)
        except RuntimeFailure as e:
            os.write(w, str(e).encode())
            return 3
        return 0

    kind, code, out = run_child(None, body, nnp=False)
    assert (kind, code) == ("exit", 3)
    assert "permission denied (set no_new_privs first" in out.decode()


# --- notify ---------------------------------------------------------------------------------------

# struct seccomp_notif { u64 id; u32 pid; u32 flags; struct seccomp_data { int nr; u32 arch;
#   u64 ip; u64 args[6]; } }  (80 bytes); struct seccomp_notif_resp { u64 id; s64 val; s32 error;
#   u32 flags; } (24 bytes)
NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101


def listener(sock_path: str, box: dict, ready: threading.Event) -> None:
    """A seccomp agent: takes one connection, reads the state JSON and the fd, answers one
    notification with a made-up errno."""
    import fcntl

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)
    srv.settimeout(20)
    ready.set()
    conn, _ = srv.accept()
    with conn:
        fds = array.array("i")
        msg, anc, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(4 * fds.itemsize))
        data = msg
        while True:
            more = conn.recv(65536)
            if not more:
                break
            data += more
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    srv.close()
    box["state"] = json.loads(data)
    box["fds"] = list(fds)
    fd = fds[0]
    buf = bytearray(80)
    fcntl.ioctl(fd, NOTIF_RECV, buf)
    nid, pid, _flags, nr = struct.unpack_from("=QIIi", buf)
    box["notif"] = {"pid": pid, "nr": nr}
    resp = struct.pack("=QqiI", nid, 0, -errno.EXDEV, 0)
    fcntl.ioctl(fd, NOTIF_SEND, bytearray(resp))
    os.close(fd)


def test_notify_end_to_end(tmp_path, scratch):
    sock_path = str(tmp_path / "agent.sock")
    profile = allow({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"},
                    listenerPath=sock_path, listenerMetadata="pallet-test-metadata")
    filt = seccomp.compile_profile(profile)
    assert filt.wants_notify and filt.listener_path == sock_path
    box: dict = {}
    ready = threading.Event()
    agent = threading.Thread(target=listener, args=(sock_path, box, ready), daemon=True)
    agent.start()
    assert ready.wait(10)
    # the "container init" loads the filter and passes the listener fd to the "runtime" (us)
    # over a socketpair, as pallet-runtime's init does; the runtime then calls send_listener
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 250
        try:
            parent_sock.close()
            LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            fd = seccomp.load(filt)
            child_sock.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
            os.close(fd)
            code = errno_of(lambda: os.mkdir(scratch))  # blocks until the agent answers
        finally:
            os._exit(code)
    child_sock.close()
    os.close(w)
    _, anc, _, _ = parent_sock.recvmsg(1, socket.CMSG_SPACE(4))
    got = array.array("i")
    got.frombytes(anc[0][2][:4])
    listener_fd = got[0]
    state = {"ociVersion": "1.2.0", "id": "ctr-1", "status": "creating", "pid": pid,
             "bundle": str(tmp_path)}
    seccomp.send_listener(filt, listener_fd, sock_path, state)
    os.close(listener_fd)
    _, status = os.waitpid(pid, 0)
    agent.join(10)
    os.close(r)
    parent_sock.close()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == errno.EXDEV  # the agent's answer
    assert not scratch.exists()
    st = box["state"]
    assert st["fds"] == ["seccompFd"] and st["pid"] == pid
    assert st["metadata"] == "pallet-test-metadata" and st["state"] == state
    assert st["ociVersion"] == "1.2.0" and len(box["fds"]) == 1
    assert box["notif"]["pid"] == pid and box["notif"]["nr"] in (NR["mkdir"], NR["mkdirat"])


def test_send_listener_to_a_dead_socket_fails_clearly(tmp_path):
    filt = seccomp.compile_profile(allow({"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
                                         listenerPath=str(tmp_path / "none.sock")))
    r, w = os.pipe()
    try:
        with pytest.raises(RuntimeFailure, match=r"cannot send the notify fd to listenerPath .*none\.sock"):
            seccomp.send_listener(filt, r, str(tmp_path / "none.sock"), {"pid": 1})
    finally:
        os.close(r)
        os.close(w)


# --- validation ------------------------------------------------------------------------------------

def close_rule(arg: dict) -> dict:
    return allow({"names": ["close"], "action": "SCMP_ACT_ERRNO", "args": [arg]})


@pytest.mark.parametrize(("profile", "message"), [
    ({"syscalls": []}, "defaultAction is required"),
    ({"defaultAction": "SCMP_ACT_NOPE"}, "defaultAction: unknown action 'SCMP_ACT_NOPE'"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "SCMP_ACT_NOTIFY cannot be the default action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}, "errnoRet is only valid with"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]},
     "architectures: unknown architecture 'SCMP_ARCH_Z80'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_FAST"]},
     "flags: unknown flag 'SECCOMP_FILTER_FLAG_FAST'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]},
     "WAIT_KILLABLE_RECV needs a SCMP_ACT_NOTIFY rule"),
    (allow({"names": ["mkdir"], "action": "SCMP_ACT_KILLL"}), r"syscalls\[0\] \(mkdir\): unknown action"),
    (allow({"names": ["mkdir"], "action": "SCMP_ACT_LOG", "errnoRet": 3}), "errnoRet is only valid"),
    (allow({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}), "not in 0..65535"),
    (allow({"names": [], "action": "SCMP_ACT_ERRNO"}), r"syscalls\[0\]: names must be"),
    (close_rule({"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}), r"args\[0\]: index 6 is not in 0..5"),
    (close_rule({"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}),
     r"args\[0\]: unknown operator 'SCMP_CMP_LIKE'"),
    (close_rule({"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}), "value -1 is not an unsigned 64-bit"),
    (allow({"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}), "listenerPath is not set"),
    (allow({"names": ["write"], "action": "SCMP_ACT_NOTIFY"}, listenerPath="/x"),
     "SCMP_ACT_NOTIFY cannot be used for write"),
])
def test_bad_profiles_name_the_bad_part(profile, message):
    with pytest.raises(RuntimeFailure, match=message):
        seccomp.compile_profile(profile)


def test_unknown_syscalls_are_skipped_or_strict():
    profile = allow({"names": ["mkdir", "no_such_syscall_ever"], "action": "SCMP_ACT_ERRNO"})
    filt = seccomp.compile_profile(profile)
    assert filt.skipped == ["no_such_syscall_ever"]
    with pytest.raises(RuntimeFailure, match=r"syscalls\[0\]: unknown syscall 'no_such_syscall_ever'"):
        seccomp.compile_profile(profile, strict=True)


def test_other_architectures_compile_and_x32_still_filters():
    profile = allow({"names": ["getppid"], "action": "SCMP_ACT_ERRNO"},
                    architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"])
    filt = seccomp.compile_profile(profile)
    single = seccomp.compile_profile(allow({"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}))
    assert len(filt) > len(single)  # a branch per architecture
    assert run_child(filt, lambda w: ctypes_errno(getppid()))[:2] == ("exit", errno.EPERM)


def test_features_match_runc_and_the_kernel():
    feats = seccomp.features()
    assert set(feats) == {"enabled", "actions", "operators", "archs", "knownFlags", "supportedFlags"}
    assert set(feats["supportedFlags"]) <= set(feats["knownFlags"])
    assert "SECCOMP_FILTER_FLAG_LOG" in feats["supportedFlags"]  # every kernel since 4.14
    with open("/proc/sys/kernel/seccomp/actions_avail") as f:
        avail = f.read().split()
    assert "user_notif" in avail and "SCMP_ACT_NOTIFY" in feats["actions"]
    if shutil.which("runc"):
        import subprocess

        r = subprocess.run(["runc", "features"], capture_output=True, text=True)
        if r.returncode == 0:
            theirs = json.loads(r.stdout)["linux"]["seccomp"]
            assert feats["actions"] == theirs["actions"]
            assert feats["operators"] == theirs["operators"]
            assert set(theirs["archs"]) <= set(feats["archs"])


def test_compile_cache(tmp_path):
    profile = json.loads(DOCKER_PROFILE.read_text())
    cache = tmp_path / "cache"
    a = seccomp.compile_profile(profile, cache_dir=str(cache))
    entries = os.listdir(cache)
    assert len(entries) == 1
    b = seccomp.compile_profile(profile, cache_dir=str(cache))
    assert b.program == a.program and b.skipped == a.skipped and b.flags == a.flags
    assert a.program == seccomp.compile_profile(profile).program
    other = dict(profile, defaultErrnoRet=13)
    c = seccomp.compile_profile(other, cache_dir=str(cache))
    assert c.program != a.program and len(os.listdir(cache)) == 2
    # a corrupt entry is recompiled, not trusted
    (cache / entries[0]).write_bytes(b"\x05\x00\x00\x00{}")
    assert seccomp.compile_profile(profile, cache_dir=str(cache)).program == a.program
