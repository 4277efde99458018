"""``--change``: Dockerfile instructions applied to an image config (``import`` and ``commit``).

The one parser for docker's ``--change``/``-c`` flag, so ``pallet import`` and ``pallet commit``
accept and refuse the same instructions. Standard library only: ``commit`` loads it without the
layer code.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable
from typing import Any

from pallet.errors import UsageError

CHANGE_INSTRUCTIONS = (
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)


def _json_list(value: str) -> list[str] | None:
    """Dockerfile's JSON form: a JSON array of strings, or None when ``value`` is not one."""
    if not value.startswith("["):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
        return parsed
    return None


def _json_or_shell(value: str) -> list[str]:
    """Dockerfile's exec form (a JSON array) or shell form (run by /bin/sh -c)."""
    v = value.strip()
    parsed = _json_list(v)
    return parsed if parsed is not None else ["/bin/sh", "-c", v]


def _pairs(instruction: str, value: str) -> list[tuple[str, str]]:
    """``K=V K2="v 2"`` or the legacy ``K V`` form of ENV and LABEL."""
    try:
        words = shlex.split(value)
    except ValueError as e:
        raise UsageError(f"invalid {instruction} {value!r}: {e}") from None
    if not words:
        raise UsageError(f"{instruction} needs a value")
    if "=" not in words[0]:
        key, _, rest = value.strip().partition(" ")
        if not rest.strip():
            raise UsageError(f"invalid {instruction} {value!r}: expected KEY=VALUE")
        return [(key, rest.strip())]
    out = []
    for w in words:
        k, sep, v = w.partition("=")
        if not sep or not k:
            raise UsageError(f"invalid {instruction} {value!r}: {w!r} is not KEY=VALUE")
        out.append((k, v))
    return out


def apply_changes(changes: Iterable[str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dockerfile instructions (``CMD=...`` or ``CMD ...``) applied to an image config's ``config``."""
    cfg: dict[str, Any] = dict(base or {})
    for change in changes:
        text = change.strip()
        head = text.split(None, 1)[0] if text else ""
        name, sep, value = head.partition("=")
        value = text[len(name) + 1 :] if sep else text[len(head) :].strip()
        instr = name.upper()
        if instr not in CHANGE_INSTRUCTIONS:
            raise UsageError(
                f"invalid change {change!r}: unknown instruction {name!r} "
                f"(valid: {', '.join(CHANGE_INSTRUCTIONS)})"
            )
        if instr in ("CMD", "ENTRYPOINT"):
            cfg["Cmd" if instr == "CMD" else "Entrypoint"] = _json_or_shell(value)
        elif instr == "ENV":
            env = list(cfg.get("Env") or [])
            for k, v in _pairs(instr, value):
                env = [e for e in env if e.split("=", 1)[0] != k] + [f"{k}={v}"]
            cfg["Env"] = env
        elif instr == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            labels.update(_pairs(instr, value))
            cfg["Labels"] = labels
        elif instr == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in value.split():
                port, _, proto = p.partition("/")
                if not port.replace("-", "").isdigit() or proto not in ("", "tcp", "udp", "sctp"):
                    raise UsageError(f"invalid EXPOSE {p!r}: expected PORT[/tcp|udp|sctp]")
                ports[f"{port}/{proto or 'tcp'}"] = {}
            cfg["ExposedPorts"] = ports
        elif instr == "VOLUME":
            vols = dict(cfg.get("Volumes") or {})
            v = value.strip()
            paths = _json_list(v)
            # docker's parseMaybeJSONToList: not a JSON array of strings means a list of words
            if paths is None:
                paths = v.split()
            if not paths:
                raise UsageError("VOLUME needs a path")
            for p in paths:
                vols[p] = {}
            cfg["Volumes"] = vols
        elif instr == "WORKDIR":
            wd = value.strip()
            if not wd:
                raise UsageError("WORKDIR needs a path")
            if not wd.startswith("/"):
                wd = os.path.join(cfg.get("WorkingDir") or "/", wd)
            cfg["WorkingDir"] = os.path.normpath(wd)
        elif instr == "USER":
            if not value.strip():
                raise UsageError("USER needs a user")
            cfg["User"] = value.strip()
        elif instr == "STOPSIGNAL":
            cfg["StopSignal"] = value.strip()
        elif instr == "ONBUILD":
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), value.strip()]
    return cfg


