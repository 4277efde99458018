"""Messages between the runtime and the processes it forks (intermediate, container init).

Two pipes made before the first fork. Each message is one ``write`` under PIPE_BUF, so messages
from the intermediate and the init never interleave. An init that dies closes its end: the
runtime sees EOF instead of hanging.
"""

from __future__ import annotations

import os

from pallet.errors import RuntimeFailure


class ChildFailed(RuntimeFailure):
    """The intermediate or init reported an error (or died) during setup."""


class Channel:
    def __init__(self) -> None:
        self.down_r, self.down_w = os.pipe()  # runtime → children
        self.up_r, self.up_w = os.pipe()  # children → runtime

    # runtime side
    def parent_side(self) -> None:
        os.close(self.down_r)
        os.close(self.up_w)
        self.down_r = self.up_w = -1

    def child_side(self) -> None:
        os.close(self.down_w)
        os.close(self.up_r)
        self.down_w = self.up_r = -1

    def close(self) -> None:
        for fd in (self.down_r, self.down_w, self.up_r, self.up_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.down_r = self.down_w = self.up_r = self.up_w = -1

    @staticmethod
    def _send(fd: int, tag: str, payload: str) -> None:
        body = f"{tag}\x00{payload}".encode(errors="replace")[:4000]
        os.write(fd, len(body).to_bytes(4, "little") + body)

    @staticmethod
    def _recv(fd: int, who: str) -> tuple[str, str]:
        head = _read_exact(fd, 4)
        if head is None:
            raise ChildFailed(f"{who} exited during setup without reporting why")
        n = int.from_bytes(head, "little")
        body = _read_exact(fd, n)
        if body is None:
            raise ChildFailed(f"{who} exited mid-message")
        tag, _, payload = body.decode(errors="replace").partition("\x00")
        if tag == "error":
            raise ChildFailed(payload)
        return tag, payload

    def send_down(self, tag: str, payload: str = "") -> None:
        try:
            self._send(self.down_w, tag, payload)
        except BrokenPipeError:
            pass  # the children are gone: the next recv_up says why (their error, or EOF)

    def recv_up(self, who: str = "container init") -> tuple[str, str]:
        return self._recv(self.up_r, who)

    def send_up(self, tag: str, payload: str = "") -> None:
        self._send(self.up_w, tag, payload)

    def recv_down(self) -> tuple[str, str]:
        return self._recv(self.down_r, "runtime")

    def expect_down(self, want: str) -> str:
        tag, payload = self.recv_down()
        if tag != want:
            raise RuntimeFailure(f"protocol: expected {want!r} from the runtime, got {tag!r}")
        return payload


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
