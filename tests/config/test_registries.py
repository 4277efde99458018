"""registries.conf v2 and its drop-ins, against containers-registries.conf(5)'s examples and rules."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from pallet.config import registries
from pallet.config.registries import RegistryBlocked, ShortNameError, is_loopback
from pallet.context import Context
from pallet.errors import ConfigError
from pallet.reference import parse


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(tmp_path: Path, main: str, *dropins: str, cache: str | None = None) -> registries.RegistriesConf:
    conf = write(tmp_path / "registries.conf", main)
    d = tmp_path / "registries.conf.d"
    d.mkdir(exist_ok=True)
    for i, text in enumerate(dropins):
        write(d / f"{i:02d}-dropin.conf", text)
    cache_path = tmp_path / "short-name-aliases.conf"
    if cache is not None:
        write(cache_path, cache)
    return registries.load(Context(registries_conf=conf), dropin_dirs=[d], alias_cache=cache_path)


def names(refs) -> list[str]:
    return [str(r) for r in refs]


def test_search_order_and_docker_hub_normalisation(tmp_path: Path) -> None:
    conf = load(tmp_path, 'unqualified-search-registries = ["registry.example.com:5000", "docker.io"]\n')
    assert names(conf.resolve("app")) == [
        "registry.example.com:5000/app:latest",
        "docker.io/library/app:latest",
    ]
    assert names(conf.resolve("ns/app:1.0")) == [
        "registry.example.com:5000/ns/app:1.0",
        "docker.io/ns/app:1.0",
    ]
    # fully qualified names are themselves
    assert names(conf.resolve("quay.io/x/y")) == ["quay.io/x/y:latest"]
    assert names(conf.resolve("localhost/y:2")) == ["localhost/y:2"]


def test_no_search_list_means_docker_hub(tmp_path: Path) -> None:
    conf = load(tmp_path, "")
    assert conf.search is None
    assert names(conf.resolve("busybox")) == ["docker.io/library/busybox:latest"]
    d = "sha256:" + "a" * 64
    assert names(conf.resolve(f"busybox@{d}")) == [f"docker.io/library/busybox@{d}"]


def test_aliases_win_and_keep_tag_and_digest(tmp_path: Path) -> None:
    conf = load(
        tmp_path,
        'unqualified-search-registries = ["a.example", "b.example"]\n'
        '[aliases]\n"fedora" = "registry.fedoraproject.org/fedora"\n',
    )
    assert names(conf.resolve("fedora:40")) == ["registry.fedoraproject.org/fedora:40"]
    assert names(conf.resolve("fedora")) == ["registry.fedoraproject.org/fedora:latest"]
    assert conf.alias("fedora")[1].endswith("registries.conf")
    assert names(conf.resolve("other")) == ["a.example/other:latest", "b.example/other:latest"]


def test_dropins_override_in_order(tmp_path: Path) -> None:
    conf = load(
        tmp_path,
        'unqualified-search-registries = ["a.example"]\nshort-name-mode = "permissive"\n'
        '[aliases]\n"one" = "a.example/one"\n"two" = "a.example/two"\n'
        '[[registry]]\nprefix = "a.example"\nlocation = "a.example"\ninsecure = true\n',
        # a drop-in replaces the search list and a same-prefix [[registry]], merges aliases
        'unqualified-search-registries = ["b.example", "c.example"]\n'
        '[aliases]\n"two" = "b.example/two"\n"three" = ""\n'
        '[[registry]]\nprefix = "a.example"\nlocation = "a.example"\nblocked = true\n',
        # a later one erases an alias; an absent key changes nothing
        '[aliases]\n"one" = ""\n',
    )
    assert conf.search == ["b.example", "c.example"]
    assert conf.search_origin.endswith("00-dropin.conf")
    assert conf.alias("one") is None
    assert str(conf.alias("two")[0]) == "b.example/two"
    reg = conf.find("a.example/x")
    assert reg is not None and reg.blocked and not reg.insecure
    assert len(conf.sources) == 3


def test_alias_cache_wins(tmp_path: Path) -> None:
    conf = load(
        tmp_path, '[aliases]\n"app" = "a.example/app"\n', cache='[aliases]\n"app" = "cached.example/app"\n'
    )
    assert names(conf.resolve("app")) == ["cached.example/app:latest"]


def test_enforcing_refuses_ambiguous_short_names(tmp_path: Path) -> None:
    conf = load(
        tmp_path,
        'short-name-mode = "enforcing"\nunqualified-search-registries = ["a.example", "b.example"]\n'
        '[aliases]\n"ok" = "a.example/ok"\n',
    )
    with pytest.raises(ShortNameError, match="ambiguous"):
        conf.resolve("app")
    assert names(conf.resolve("ok")) == ["a.example/ok:latest"]
    one = load(
        tmp_path / "one", 'short-name-mode = "enforcing"\nunqualified-search-registries = ["a.example"]\n'
    )
    assert names(one.resolve("app")) == ["a.example/app:latest"]


def test_a_chooser_picks_among_the_search_registries(tmp_path: Path) -> None:
    """On a terminal podman asks which registry an ambiguous short name means (enforcing and
    permissive alike); the answer is the only candidate and is remembered as an alias."""
    asked = []

    def pick_second(name, candidates):
        asked.append((name, names(candidates)))
        return candidates[1]

    for mode in ("enforcing", "permissive"):
        conf = load(
            tmp_path / mode,
            f'short-name-mode = "{mode}"\nunqualified-search-registries = ["a.example", "b.example"]\n',
        )
        assert names(conf.resolve("team/app:v2", choose=pick_second)) == ["b.example/team/app:v2"]
        assert asked[-1] == ("team/app", ["a.example/team/app:v2", "b.example/team/app:v2"])
        # no answer (not a terminal): enforcing refuses, permissive tries them all
        if mode == "enforcing":
            with pytest.raises(ShortNameError, match="ambiguous"):
                conf.resolve("app", choose=lambda n, c: None)
        else:
            assert len(conf.resolve("app", choose=lambda n, c: None)) == 2
    # disabled mode never asks; one registry, an alias or a qualified name need no question
    n = len(asked)
    conf = load(
        tmp_path / "d", 'short-name-mode = "disabled"\nunqualified-search-registries = ["a.x", "b.x"]\n'
    )
    assert len(conf.resolve("app", choose=pick_second)) == 2
    one = load(
        tmp_path / "one", 'unqualified-search-registries = ["a.example"]\n[aliases]\n"al" = "c.x/al"\n'
    )
    for name in ("app", "al", "q.example/app"):
        one.resolve(name, choose=pick_second)
    assert len(asked) == n
    # the answer recorded in the cache is an alias from then on, over the configuration's
    cache = tmp_path / "cache" / "short-name-aliases.conf"
    registries.record_alias("team/app", parse("b.example/team/app:v2"), cache)
    registries.record_alias("other", parse("a.example/other"), cache)
    again = registries.load(
        Context(registries_conf=tmp_path / "enforcing" / "registries.conf"), dropin_dirs=[], alias_cache=cache
    )
    assert names(again.resolve("team/app:v3")) == ["b.example/team/app:v3"]
    assert names(again.resolve("other")) == ["a.example/other:latest"]


def test_blocked(tmp_path: Path) -> None:
    conf = load(
        tmp_path,
        '[[registry]]\nlocation = "evil.example"\nblocked = true\n'
        '[[registry]]\nprefix = "quay.io/bad"\nlocation = "quay.io/bad"\nblocked = true\n',
    )
    with pytest.raises(RegistryBlocked, match=r"registry evil\.example is blocked in registries\.conf"):
        conf.endpoints(parse("evil.example/x:1"))
    with pytest.raises(RegistryBlocked):
        conf.endpoints(parse("quay.io/bad/img"))
    assert [s.registry for s in conf.endpoints(parse("quay.io/good/img"))] == ["quay.io"]
    # the prefix ends at a component boundary
    assert conf.endpoints(parse("quay.io/badger/img"))[0].repository == "badger/img"


def test_man_page_mirror_example(tmp_path: Path) -> None:
    conf = load(
        tmp_path,
        """
unqualified-search-registries = ["example.com"]

[[registry]]
prefix = "example.com/foo"
insecure = false
blocked = false
location = "internal-registry-for-example.com/bar"

[[registry.mirror]]
location = "example-mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "example-mirror-1.local/mirrors/foo"
insecure = true

[[registry]]
location = "registry.com"

[[registry.mirror]]
location = "mirror.registry.com"
""",
    )
    srcs = conf.endpoints("example.com/foo/image:latest")
    assert [str(s.reference) for s in srcs] == [
        "example-mirror-0.local/mirror-for-foo/image:latest",
        "example-mirror-1.local/mirrors/foo/image:latest",
        "internal-registry-for-example.com/bar/image:latest",
    ]
    assert [(s.insecure, s.mirror) for s in srcs] == [(False, True), (True, True), (False, False)]
    assert [str(s.reference) for s in conf.endpoints("registry.com/image:latest")] == [
        "mirror.registry.com/image:latest",
        "registry.com/image:latest",
    ]
    assert conf.is_insecure("example-mirror-1.local") is False  # insecure applies to that mirror entry only


def test_pull_from_mirror_and_digest_only(tmp_path: Path) -> None:
    conf = load(
        tmp_path,
        """
[[registry]]
location = "a.example"
[[registry.mirror]]
location = "digests.example"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tags.example"
pull-from-mirror = "tag-only"

[[registry]]
location = "b.example"
mirror-by-digest-only = true
[[registry.mirror]]
location = "bmirror.example"
""",
    )
    d = "sha256:" + "b" * 64
    assert [s.registry for s in conf.endpoints(f"a.example/x@{d}")] == ["digests.example", "a.example"]
    assert [s.registry for s in conf.endpoints("a.example/x:1")] == ["tags.example", "a.example"]
    assert [s.registry for s in conf.endpoints("b.example/x:1")] == ["b.example"]
    assert [s.registry for s in conf.endpoints(f"b.example/x@{d}")] == ["bmirror.example", "b.example"]


def test_wildcard_prefix(tmp_path: Path) -> None:
    conf = load(
        tmp_path,
        """
[[registry]]
prefix = "*.example.com"
insecure = true
[[registry.mirror]]
location = "mirror.local/ex"

[[registry]]
prefix = "*.corp.internal"
location = "proxy.corp.internal"
""",
    )
    for host in ("a.example.com", "b.a.example.com"):
        srcs = conf.endpoints(f"{host}/img:1")
        assert str(srcs[-1].reference) == f"{host}/img:1"  # no location: no rewrite
        assert srcs[-1].insecure
        assert str(srcs[0].reference) == "mirror.local/ex/img:1"
    assert conf.find("example.com/img") is None
    assert conf.is_insecure("a.example.com")
    assert str(conf.endpoints("x.corp.internal/team/app:2")[0].reference) == "proxy.corp.internal/team/app:2"


def test_docker_hub_library_prefix(tmp_path: Path) -> None:
    conf = load(tmp_path, '[[registry]]\nprefix = "docker.io/library"\nlocation = "hub-mirror.local/lib"\n')
    assert str(conf.endpoints(parse("docker.io/alpine:3"))[0].reference) == "hub-mirror.local/lib/alpine:3"
    assert conf.endpoints(parse("docker.io/user/alpine:3"))[0].registry == "docker.io"


def test_version_1_format(tmp_path: Path) -> None:
    conf = load(
        tmp_path,
        "[registries.search]\nregistries = ['r1.example', 'r2.example']\n"
        "[registries.insecure]\nregistries = ['r3.example']\n"
        "[registries.block]\nregistries = ['bad.example']\n",
    )
    assert conf.search == ["r1.example", "r2.example"]
    assert conf.is_insecure("r3.example")
    with pytest.raises(RegistryBlocked):
        conf.check_blocked("bad.example/x")


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[registry]]\nlocation = "https://x.example"\n', "URI schemes are not supported"),
        ('short-name-mode = "sometimes"\n', "invalid short-name-mode 'sometimes'"),
        ('[[registry]]\nprefix = "*.x.example/foo"\n', "must be of the form"),
        ('[[registry]]\nprefix = "x.example/foo"\n', "has no location"),
        (
            '[[registry]]\nlocation = "x.example"\n[[registry.mirror]]\nlocation = "m"\n'
            'pull-from-mirror = "some"\n',
            "unsupported pull-from-mirror",
        ),
        (
            '[[registry]]\nlocation = "x.example"\ninsecure = true\n[[registry]]\nprefix = "x.example/a"\n'
            'location = "x.example"\n',
            "conflicting 'insecure'",
        ),
        ('[aliases]\n"quay.io/x" = "quay.io/x"\n', "must be a short name"),
        ('[aliases]\n"x" = "quay.io/x:1"\n', "must not contain a tag"),
        ('[aliases]\n"x" = "x"\n', "must name a registry"),
        ('unqualified-search-registries = ["bad host"]\n', "invalid unqualified-search-registries"),
        ("this is = not toml [", "invalid TOML"),
    ],
)
def test_invalid_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load(tmp_path, text)
    assert "registries.conf" in str(err.value) and "\n" not in str(err.value)


def test_dropins_must_be_v2(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="drop-in files must use the version 2"):
        load(tmp_path, "", "[registries.search]\nregistries = ['a']\n")


def test_default_locations(home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # $CONTAINERS_REGISTRIES_CONF is used when the context does not say
    env_conf = write(tmp_path / "env.conf", 'unqualified-search-registries = ["env.example"]\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(env_conf))
    conf = registries.load(Context(), dropin_dirs=[], alias_cache=tmp_path / "none")
    assert conf.search == ["env.example"]
    monkeypatch.delenv("CONTAINERS_REGISTRIES_CONF")
    # the user's file replaces the system's, and only the user's drop-ins apply
    write(home / ".config/containers/registries.conf", 'unqualified-search-registries = ["user.example"]\n')
    write(home / ".config/containers/registries.conf.d/50-x.conf", '[aliases]\n"u" = "user.example/u"\n')
    conf = registries.load(Context(), alias_cache=tmp_path / "none")
    assert conf.search == ["user.example"]
    assert names(conf.resolve("u")) == ["user.example/u:latest"]
    assert all(str(p).startswith(str(home)) for p in conf.sources)
    # an explicit file that is missing is an error
    with pytest.raises(ConfigError, match="does not exist"):
        registries.load(Context(registries_conf=tmp_path / "missing.conf"), dropin_dirs=[])


def test_loopback() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("127.3.4.5") and is_loopback("[::1]:5000")
    assert is_loopback("localhost:80")
    assert not is_loopback("10.0.0.1:5000") and not is_loopback("example.com")


@pytest.mark.slow
@pytest.mark.peer
def test_same_answers_as_podman(tmp_path: Path) -> None:
    """podman resolves short names through the same file: check our order against its candidates."""
    conf_path = write(
        tmp_path / "registries.conf",
        'unqualified-search-registries = ["127.0.0.1:1", "127.0.0.1:2"]\nshort-name-mode = "permissive"\n',
    )
    runroot = tempfile.mkdtemp(prefix="icpod-", dir="/tmp")  # podman wants a short runroot
    try:
        res = subprocess.run(
            [
                "podman",
                "--root",
                str(tmp_path / "root"),
                "--runroot",
                runroot,
                "--storage-driver",
                "vfs",
                "pull",
                "--tls-verify=false",
                "pallet-nothing/app:1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={
                "CONTAINERS_REGISTRIES_CONF": str(conf_path),
                "HOME": str(tmp_path),
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            },
        )
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
    assert res.returncode != 0
    ours = registries.load(Context(registries_conf=conf_path), dropin_dirs=[], alias_cache=tmp_path / "none")
    expected = names(ours.resolve("pallet-nothing/app:1"))
    assert expected == ["127.0.0.1:1/pallet-nothing/app:1", "127.0.0.1:2/pallet-nothing/app:1"]
    positions = [res.stderr.find(e) for e in expected]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), res.stderr
