"""containers-policy.json(5): whether an image from a registry may be used.

Read from ``$HOME/.config/containers/policy.json`` if it exists, else
``/etc/containers/policy.json``; no file at all means accept (what podman ships). Only the
``docker`` transport's scopes apply here, most specific first: ``host/repo:tag`` (or ``@digest``),
``host/repo``, its parent namespaces, ``host``, ``*.parent.domains``, the transport default
``""``, then ``default``.

``insecureAcceptAnything`` accepts, ``reject`` refuses. ``signedBy`` and ``sigstoreSigned``
demand signature verification, which pallet does not implement: such images are refused with
an error saying so, never accepted silently.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pallet.errors import ConfigError
from pallet.reference import Reference, normalize, parse, split_host_port

SYSTEM_POLICY = Path("/etc/containers/policy.json")
KNOWN_TYPES = ("insecureAcceptAnything", "reject", "signedBy", "sigstoreSigned", "signedBaseLayer")


class PolicyRejected(ConfigError):
    """policy.json forbids this image."""


class SignatureVerificationUnsupported(PolicyRejected):
    """policy.json requires signatures, which pallet cannot verify."""


def default_path() -> Path:
    user = Path(os.environ.get("HOME") or os.path.expanduser("~")) / ".config/containers/policy.json"
    return user if user.exists() else SYSTEM_POLICY


@dataclass(frozen=True)
class Policy:
    default: tuple[dict[str, Any], ...] = ({"type": "insecureAcceptAnything"},)
    transports: dict[str, dict[str, tuple[dict[str, Any], ...]]] = field(default_factory=dict)
    path: str = ""

    def requirements_for(self, ref: Reference) -> tuple[str, tuple[dict[str, Any], ...]]:
        """(scope that matched, its requirements) for a docker:// image."""
        scopes = self.transports.get("docker", {})
        for scope in docker_scopes(ref):
            if scope in scopes:
                return scope, scopes[scope]
        if "" in scopes:
            return 'transport "docker" default', scopes[""]
        return "default", self.default

    def check(self, ref: Reference | str) -> None:
        """Raise unless ``ref`` (a registry image) may be pulled."""
        if isinstance(ref, str):
            ref = parse(ref)
        ref = normalize(ref)
        scope, reqs = self.requirements_for(ref)
        where = f" in {self.path}" if self.path else ""
        for req in reqs:
            kind = req["type"]
            if kind == "insecureAcceptAnything":
                continue
            if kind == "reject":
                raise PolicyRejected(f"image {ref} is rejected by policy{where} (scope {scope})")
            raise SignatureVerificationUnsupported(
                f"image {ref} requires a {kind} signature by policy{where} (scope {scope}); signature "
                "verification is not supported by pallet"
            )


def docker_scopes(ref: Reference) -> list[str]:
    """Policy scopes of a docker reference, most specific first."""
    out = []
    name = ref.name
    if ref.digest:
        out.append(f"{name}@{ref.digest}")
    elif ref.tag:
        out.append(f"{name}:{ref.tag}")
    out.append(name)
    while "/" in name:
        name = name.rsplit("/", 1)[0]
        out.append(name)
    host, _ = split_host_port(ref.domain)
    labels = host.split(".")
    for i in range(1, len(labels)):
        out.append("*." + ".".join(labels[i:]))
    return out


def _requirements(v: Any, where: str, path: Path) -> tuple[dict[str, Any], ...]:
    if not isinstance(v, list) or not v:
        raise ConfigError(f"policy {path}: {where} must be a non-empty list of requirements")
    for req in v:
        if not isinstance(req, dict) or req.get("type") not in KNOWN_TYPES:
            got = req.get("type") if isinstance(req, dict) else req
            raise ConfigError(f"policy {path}: {where}: unknown policy requirement type {got!r}")
    return tuple(v)


def load(path: str | os.PathLike[str] | None = None) -> Policy:
    """Parse policy.json (``path``, or the default location). A missing default file accepts all."""
    p = Path(path) if path else default_path()
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        if path:
            raise ConfigError(f"policy file {p} does not exist") from None
        return Policy()
    except OSError as e:
        raise ConfigError(f"reading policy {p}: {e.strerror}") from None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"policy {p} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or "default" not in doc:
        raise ConfigError(f'policy {p}: the "default" requirements are missing')
    unknown = set(doc) - {"default", "transports"}
    if unknown:
        raise ConfigError(f"policy {p}: unknown field {sorted(unknown)[0]!r}")
    default = _requirements(doc["default"], "default", p)
    transports: dict[str, dict[str, tuple[dict[str, Any], ...]]] = {}
    raw_t = doc.get("transports") or {}
    if not isinstance(raw_t, dict):
        raise ConfigError(f"policy {p}: transports must be an object")
    for tname, scopes in raw_t.items():
        if not isinstance(scopes, dict):
            raise ConfigError(f"policy {p}: transports.{tname} must be an object")
        transports[tname] = {s: _requirements(r, f"transports.{tname}[{s!r}]", p) for s, r in scopes.items()}
    return Policy(default, transports, str(p))
