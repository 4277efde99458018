"""certs.d lookup and SSLContext construction (real TLS use is in tests/registry/client)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from pallet.config import certs
from pallet.context import Context
from pallet.errors import ConfigError
from tests.registry.client.conftest import make_ca, make_cert


def test_directories(home: Path, tmp_path: Path) -> None:
    assert certs.cert_dirs("r.example:5000") == [
        home / ".config/containers/certs.d/r.example:5000",
        Path("/etc/containers/certs.d/r.example:5000"),
        Path("/etc/docker/certs.d/r.example:5000"),
    ]
    assert certs.cert_dirs("r.example:5000", Context(cert_dir=tmp_path)) == [tmp_path]


def test_context_loads_ca_and_client_pair(home: Path, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    client = make_cert(ca, tmp_path / "ca", "client", client=True)
    d = home / ".config/containers/certs.d/r.example:5000"
    d.mkdir(parents=True)
    (d / "ca.crt").write_bytes(ca[0].read_bytes())
    (d / "client.cert").write_bytes(client[0].read_bytes())
    (d / "client.key").write_bytes(client[1].read_bytes())
    sc = certs.ssl_context("r.example:5000")
    assert sc.verify_mode == ssl.CERT_REQUIRED
    assert any(c.get("subject") == ((("commonName", "pallet-test-ca"),),) for c in sc.get_ca_certs())
    insecure = certs.ssl_context("r.example:5000", verify=False)
    assert insecure.verify_mode == ssl.CERT_NONE


def test_broken_files(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"CA certificate .*ca\.crt is unusable"):
        certs.ssl_context("x", Context(cert_dir=tmp_path))
    (tmp_path / "ca.crt").unlink()
    (tmp_path / "client.cert").write_text("x")
    with pytest.raises(ConfigError, match=r"has no matching key client\.key"):
        certs.ssl_context("x", Context(cert_dir=tmp_path))
