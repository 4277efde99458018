"""containers-auth.json: lookup order, key specificity, docker's files, helpers, and writes."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from pallet.config import auth
from pallet.config.auth import Credentials
from pallet.context import Context
from pallet.errors import ConfigError


def b64(user: str, pw: str) -> str:
    return base64.b64encode(f"{user}:{pw}".encode()).decode()


def write_json(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_primary_file_location(home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert auth.primary_path() == Path(os.environ["XDG_RUNTIME_DIR"]) / "containers/auth.json"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert auth.primary_path() == Path(f"/run/containers/{os.getuid()}/auth.json")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "env.json"))
    assert auth.primary_path() == tmp_path / "env.json"
    assert auth.primary_path(Context(auth_file=tmp_path / "ctx.json")) == tmp_path / "ctx.json"
    assert (
        auth.primary_path(Context(auth_file=tmp_path / "ctx.json"), tmp_path / "flag.json")
        == tmp_path / "flag.json"
    )


def test_precedence_across_files(home: Path) -> None:
    primary = auth.primary_path()
    write_json(
        home / ".docker/config.json",
        {
            "auths": {
                "r.example": {"auth": b64("docker", "d")},
                "only-docker.example": {"auth": b64("od", "x")},
            }
        },
    )
    write_json(home / ".config/containers/auth.json", {"auths": {"r.example": {"auth": b64("xdg", "x")}}})
    assert auth.lookup("r.example") == Credentials("xdg", "x")
    write_json(primary, {"auths": {"r.example": {"auth": b64("primary", "p")}}})
    assert auth.lookup("r.example") == Credentials("primary", "p")
    assert auth.lookup("only-docker.example/some/repo") == Credentials("od", "x")
    assert auth.lookup("nowhere.example") is None


def test_explicit_file_is_the_only_one_read(home: Path, tmp_path: Path) -> None:
    write_json(home / ".docker/config.json", {"auths": {"r.example": {"auth": b64("docker", "d")}}})
    explicit = write_json(tmp_path / "mine.json", {"auths": {}})
    assert auth.lookup("r.example", Context(auth_file=explicit)) is None
    assert auth.lookup("r.example", authfile=explicit) is None


def test_most_specific_key_wins(home: Path) -> None:
    write_json(
        auth.primary_path(),
        {
            "auths": {
                "my-registry.local": {"auth": b64("host", "1")},
                "my-registry.local/foo": {"auth": b64("ns", "2")},
                "my-registry.local/foo/bar/image": {"auth": b64("repo", "3")},
            }
        },
    )
    assert auth.lookup("my-registry.local/foo/bar/image").username == "repo"
    assert auth.lookup("my-registry.local/foo/bar/other").username == "ns"
    assert auth.lookup("my-registry.local/foo").username == "ns"
    assert auth.lookup("my-registry.local/baz/x").username == "host"
    assert auth.lookup("my-registry.local").username == "host"


def test_docker_legacy_keys_and_dockercfg(home: Path) -> None:
    write_json(
        home / ".docker/config.json",
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hubuser", "hub")},
                "http://old.example:5000/v1/": {"auth": b64("old", "o")},
            }
        },
    )
    assert auth.lookup("docker.io").username == "hubuser"
    assert auth.lookup("docker.io/library/alpine").username == "hubuser"
    assert auth.lookup("old.example:5000").username == "old"
    write_json(home / ".dockercfg", {"https://ancient.example": {"auth": b64("anc", "a"), "email": "x@y"}})
    assert auth.lookup("ancient.example/repo").username == "anc"


def test_identity_token_and_password_with_colons(home: Path) -> None:
    write_json(
        auth.primary_path(),
        {
            "auths": {
                "tok.example": {"auth": b64("<token>", ""), "identitytoken": "refresh-me"},
                "colon.example": {"auth": b64("u", "pa:ss:word")},
            }
        },
    )
    assert auth.lookup("tok.example").identity_token == "refresh-me"
    assert auth.lookup("colon.example").password == "pa:ss:word"


def _helper(bin_dir: Path, name: str, secrets: dict[str, tuple[str, str]], log: Path) -> None:
    """A real docker-credential-NAME program speaking the helper protocol."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"""#!/usr/bin/env python3
import json, sys
secrets = {json.dumps(secrets)}
action = sys.argv[1]
data = sys.stdin.read().strip()
open({str(log)!r}, "a").write(action + " " + data.replace(chr(10), " ") + chr(10))
if action == "get":
    if data not in secrets:
        print("credentials not found in native keychain")
        sys.exit(1)
    user, secret = secrets[data]
    print(json.dumps({{"ServerURL": data, "Username": user, "Secret": secret}}))
elif action == "erase":
    if data not in secrets:
        print("credentials not found in native keychain")
        sys.exit(1)
""")
    script.chmod(0o755)


def test_credential_helpers(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "helper.log"
    _helper(
        tmp_path / "bin",
        "pallettest",
        {"helped.example": ("hu", "hp"), "tok.example": ("<token>", "idt"), "store.example": ("su", "sp")},
        log,
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    write_json(
        home / ".docker/config.json",
        {
            "auths": {"plain.example": {"auth": b64("pu", "pp")}},
            "credHelpers": {
                "helped.example": "pallettest",
                "tok.example": "pallettest",
                "gone.example": "missing",
            },
            "credsStore": "pallettest",
        },
    )
    assert auth.lookup("helped.example/a/b") == Credentials("hu", "hp")
    assert auth.lookup("tok.example") == Credentials(identity_token="idt")
    assert auth.lookup("plain.example") == Credentials("pu", "pp")  # an auths entry beats credsStore
    assert auth.lookup("store.example") == Credentials("su", "sp")  # credsStore for the rest
    assert auth.lookup("unknown.example") is None  # the helper's "not found" is not an error
    assert "get helped.example" in log.read_text()
    with pytest.raises(auth.CredentialHelperError, match="docker-credential-missing is not installed"):
        auth.lookup("gone.example")


def test_store_and_remove(home: Path) -> None:
    path = auth.store("r.example:5000", Credentials("u", "p"))
    assert path == auth.primary_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["auths"]["r.example:5000"]["auth"] == b64("u", "p")
    auth.store("https://index.docker.io/v1/", Credentials("hub", "h"))
    auth.store("quay.io/team", Credentials("t", "t"))
    assert set(json.loads(path.read_text())["auths"]) == {"r.example:5000", "docker.io", "quay.io/team"}
    assert auth.lookup("docker.io/library/x").username == "hub"
    auth.remove("r.example:5000")
    assert auth.lookup("r.example:5000") is None
    with pytest.raises(auth.NotLoggedIn, match=r"not logged into r\.example:5000"):
        auth.remove("r.example:5000")
    auth.remove_all()
    assert json.loads(path.read_text())["auths"] == {}


def test_store_keeps_other_fields(home: Path) -> None:
    path = write_json(
        auth.primary_path(), {"auths": {"a.example": {"auth": b64("a", "a")}}, "HttpHeaders": {"X": "1"}}
    )
    auth.store("b.example", Credentials("b", "b"))
    doc = json.loads(path.read_text())
    assert doc["HttpHeaders"] == {"X": "1"} and set(doc["auths"]) == {"a.example", "b.example"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"auths": []}', "'auths' must be an object"),
        ('{"auths": {"x.example": {"auth": "!!!"}}}', "invalid base64"),
    ],
)
def test_broken_files_are_clear_errors(home: Path, content: str, message: str) -> None:
    p = auth.primary_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(content)
    with pytest.raises(ConfigError, match=message):
        auth.lookup("x.example")


def test_bad_keys() -> None:
    with pytest.raises(ConfigError, match="without tag or digest"):
        auth.normalize_key("quay.io/x:tag")
    assert auth.normalize_key("https://quay.io/v1/") == "quay.io"
    assert auth.normalize_key("registry-1.docker.io") == "docker.io"


def test_skopeo_reads_what_we_write_and_we_read_what_it_writes(tmp_path: Path) -> None:
    ours = tmp_path / "ours.json"
    auth.store("127.0.0.1:5999", Credentials("alice", "pw"), authfile=ours)
    res = subprocess.run(
        ["skopeo", "login", "--get-login", "--authfile", str(ours), "127.0.0.1:5999"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0 and res.stdout.strip() == "alice", res.stderr
    res = subprocess.run(
        ["skopeo", "logout", "--authfile", str(ours), "127.0.0.1:5999"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert auth.lookup("127.0.0.1:5999", authfile=ours) is None


def test_registries_conf_credential_helpers(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _helper(tmp_path / "bin", "pallettest", {"r.example": ("from-helper", "h")}, tmp_path / "log")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    write_json(auth.primary_path(), {"auths": {"r.example": {"auth": b64("from-file", "f")}}})
    assert auth.lookup("r.example").username == "from-file"
    assert auth.lookup("r.example", helpers=["pallettest", "containers-auth.json"]).username == "from-helper"
    assert auth.lookup("r.example", helpers=["containers-auth.json", "pallettest"]).username == "from-file"
    assert auth.lookup("other.example", helpers=["pallettest"]) is None
