"""``pallet login``/``logout`` against a real htpasswd docker-registry, and ``pallet image tags``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pallet.cli.main import main
from pallet.cli.parser import Parser
from pallet.cli.remote import register_image_tags
from pallet.config.auth import Credentials
from pallet.context import Context
from pallet.registry.client import RegistryClient
from tests.registry.client.conftest import PASSWORD, USER, Layout

pytestmark = pytest.mark.peer


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No stray credentials or registries.conf from the host's user."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    for var in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_login_logout_round_trip(htpasswd_registry: str, env: Path, capsys: pytest.CaptureFixture) -> None:
    authfile = env / "auth.json"
    reg = htpasswd_registry
    assert main(["login", "-u", USER, "-p", "wrong", "--authfile", str(authfile), reg]) == 125
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid username/password" in err
    assert not authfile.exists()  # nothing stored for bad credentials

    assert main(["login", "-u", USER, "-p", PASSWORD, "--authfile", str(authfile), reg]) == 0
    assert capsys.readouterr().out == "Login Succeeded!\n"
    assert stat.S_IMODE(authfile.stat().st_mode) == 0o600
    assert set(json.loads(authfile.read_text())["auths"]) == {reg}

    assert main(["login", "--get-login", "--authfile", str(authfile), reg]) == 0
    assert capsys.readouterr().out == f"{USER}\n"

    # podman reads the same file
    res = subprocess.run(
        ["podman", "login", "--get-login", "--authfile", str(authfile), reg], capture_output=True, text=True
    )
    assert res.stdout.strip() == USER, res.stderr

    assert main(["logout", "--authfile", str(authfile), reg]) == 0
    assert capsys.readouterr().out == f"Removed login credentials for {reg}\n"
    assert json.loads(authfile.read_text())["auths"] == {}
    assert main(["logout", "--authfile", str(authfile), reg]) == 125
    assert f"not logged into {reg}" in capsys.readouterr().err
    assert main(["login", "--get-login", "--authfile", str(authfile), reg]) == 125


def test_login_default_file_password_stdin_and_logout_all(htpasswd_registry: str, env: Path) -> None:
    environ = {**os.environ}
    cmd = [sys.executable, "-m", "pallet.cli.main"]
    res = subprocess.run(
        [*cmd, "login", "-u", USER, "--password-stdin", htpasswd_registry],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=environ,
    )
    assert res.returncode == 0, res.stderr
    default = env / "run/containers/auth.json"
    assert htpasswd_registry in json.loads(default.read_text())["auths"]
    res = subprocess.run([*cmd, "logout", "--all"], capture_output=True, text=True, env=environ)
    assert res.returncode == 0 and "all registries" in res.stdout
    assert json.loads(default.read_text())["auths"] == {}


def test_login_bad_flags(env: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["login", "-p", "x", "--password-stdin", "-u", "u", "127.0.0.1:1"]) == 125
    assert "mutually exclusive" in capsys.readouterr().err
    assert main(["login", "--tls-verify=maybe", "127.0.0.1:1"]) == 125
    assert "invalid boolean value" in capsys.readouterr().err


def test_login_unreachable_registry(env: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["login", "-u", "u", "-p", "p", "--authfile", str(env / "a.json"), "127.0.0.1:1"]) == 125
    err = capsys.readouterr().err
    assert err.startswith("Error: cannot reach registry 127.0.0.1:1") and err.count("\n") == 1


def _tags_parser() -> Parser:
    parser = Parser(prog="pallet image")
    sub = parser.add_subparsers(dest="sub", parser_class=Parser)
    register_image_tags(sub)
    return parser


def test_image_tags(registry: str, small: Layout, env: Path, capsys: pytest.CaptureFixture) -> None:
    with RegistryClient(registry) as c:
        for d in small.descriptors():
            c.upload_blob("ic/cli-tags", small.blob(d.digest), d.digest, d.size)
        for tag in ("1.0", "1.1", "latest"):
            c.put_manifest("ic/cli-tags", tag, small.manifest_raw, small.media_type)
    args = _tags_parser().parse_args(["tags", f"{registry}/ic/cli-tags"])
    assert args.func(args, Context()) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == ["1.0", "1.1", "latest"]
    # a short name, resolved through registries.conf's search list
    conf = env / "registries.conf"
    conf.write_text(f'unqualified-search-registries = ["{registry}"]\n')
    args = _tags_parser().parse_args(["tags", "--tls-verify=false", "ic/cli-tags"])
    assert args.tls_verify is False
    assert args.func(args, Context(registries_conf=conf)) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == ["1.0", "1.1", "latest"]


def test_image_tags_errors(registry: str, env: Path) -> None:
    from pallet.errors import UsageError
    from pallet.registry.client import NotFoundError

    args = _tags_parser().parse_args(["tags", f"{registry}/ic/cli-tags:1.0"])
    with pytest.raises(UsageError, match="without tag or digest"):
        args.func(args, Context())
    args = _tags_parser().parse_args(["tags", f"{registry}/ic/never-pushed"])
    with pytest.raises(NotFoundError, match="NAME_UNKNOWN"):
        args.func(args, Context())
    with pytest.raises(UsageError, match="REPO"):
        _tags_parser().parse_args(["tags"])


def test_image_tags_with_credentials_from_authfile(
    htpasswd_registry: str, small: Layout, env: Path, capsys: pytest.CaptureFixture
) -> None:
    with RegistryClient(htpasswd_registry, auth=Credentials(USER, PASSWORD)) as c:
        for d in small.descriptors():
            c.upload_blob("ic/private", small.blob(d.digest), d.digest, d.size)
        c.put_manifest("ic/private", "v1", small.manifest_raw, small.media_type)
    authfile = env / "auth.json"
    assert main(["login", "-u", USER, "-p", PASSWORD, "--authfile", str(authfile), htpasswd_registry]) == 0
    capsys.readouterr()
    args = _tags_parser().parse_args(["tags", "--authfile", str(authfile), f"{htpasswd_registry}/ic/private"])
    assert args.func(args, Context()) == 0
    assert capsys.readouterr().out == "v1\n"
