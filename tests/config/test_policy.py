"""containers-policy.json: scopes, reject, and signature requirements refused loudly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pallet.config import policy
from pallet.config.policy import PolicyRejected, SignatureVerificationUnsupported
from pallet.errors import ConfigError


def write(tmp_path: Path, doc) -> Path:
    p = tmp_path / "policy.json"
    p.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return p


ACCEPT = [{"type": "insecureAcceptAnything"}]
REJECT = [{"type": "reject"}]


def test_missing_default_file_accepts(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "SYSTEM_POLICY", home / "no-such-policy.json")
    p = policy.load()
    p.check("quay.io/anything:1")


def test_user_file_wins(home: Path) -> None:
    (home / ".config/containers").mkdir(parents=True)
    (home / ".config/containers/policy.json").write_text(json.dumps({"default": REJECT}))
    with pytest.raises(PolicyRejected, match="rejected by policy"):
        policy.load().check("quay.io/x")


def test_scopes_most_specific_first(tmp_path: Path) -> None:
    p = policy.load(
        write(
            tmp_path,
            {
                "default": REJECT,
                "transports": {
                    "docker": {
                        "": REJECT,
                        "trusted.example": ACCEPT,
                        "trusted.example/private": REJECT,
                        "trusted.example/private/ok:1": ACCEPT,
                        "*.corp.example": ACCEPT,
                    }
                },
            },
        )
    )
    p.check("trusted.example/app:1")
    p.check("trusted.example/private/ok:1")
    with pytest.raises(
        PolicyRejected, match=r"trusted.example/private/ok:2 is rejected .*scope trusted.example/private\)"
    ):
        p.check("trusted.example/private/ok:2")
    p.check("a.b.corp.example/x")
    with pytest.raises(PolicyRejected, match='transport "docker" default'):
        p.check("other.example/x")
    with pytest.raises(PolicyRejected):
        p.check("busybox")  # docker.io/library/busybox:latest


def test_signature_requirements_are_refused_not_ignored(tmp_path: Path) -> None:
    p = policy.load(
        write(
            tmp_path,
            {
                "default": ACCEPT,
                "transports": {
                    "docker": {
                        "signed.example": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}],
                        "sigstore.example": [{"type": "sigstoreSigned", "keyPath": "/k.pub"}],
                    }
                },
            },
        )
    )
    for ref in ("signed.example/a", "sigstore.example/b:1"):
        with pytest.raises(SignatureVerificationUnsupported, match="signature verification is not supported"):
            p.check(ref)
    p.check("unsigned.example/c")


@pytest.mark.parametrize(
    "doc, message",
    [
        ("{", "not valid JSON"),
        ({"transports": {}}, "default"),
        ({"default": []}, "non-empty"),
        ({"default": [{"type": "acceptEverything"}]}, "unknown policy requirement type 'acceptEverything'"),
        ({"default": ACCEPT, "extra": 1}, "unknown field 'extra'"),
    ],
)
def test_invalid_policy(tmp_path: Path, doc, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy.load(write(tmp_path, doc))


def test_system_policy_parses() -> None:
    if not policy.SYSTEM_POLICY.exists():
        pytest.skip("no /etc/containers/policy.json")
    policy.load(policy.SYSTEM_POLICY)
