"""containers-registries.conf(5), version 2, with its drop-in directory, as containers/image reads it.

Where from (first that applies): ``ctx.registries_conf``, ``$CONTAINERS_REGISTRIES_CONF``,
``~/.config/containers/registries.conf`` if it exists, else ``/etc/containers/registries.conf``.
Then the ``*.conf`` drop-ins of ``/etc/containers/registries.conf.d`` and
``~/.config/containers/registries.conf.d`` (only the user's directory when the user's file was
used) in name order. A drop-in overrides what it sets: ``unqualified-search-registries`` and
``short-name-mode`` are replaced, ``[[registry]]`` tables replace those with the same prefix,
``[aliases]`` are merged key by key (an empty value erases an alias). The machine-written
``short-name-aliases.conf`` cache (``/var/cache/containers`` for root, else
``$XDG_CACHE_HOME/containers``) wins over aliases in the configuration files.

Version 1 files (``[registries.search]`` ...) are converted as containers/image does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pallet.context import Context
from pallet.errors import ConfigError, InvalidReference, RegistryError
from pallet.reference import DOMAIN_RE, Reference, normalize, parse, split_host_port

SYSTEM_CONF = Path("/etc/containers/registries.conf")
SYSTEM_DIR = Path("/etc/containers/registries.conf.d")
SHORT_NAME_MODES = ("enforcing", "permissive", "disabled")
DEFAULT_SHORT_NAME_MODE = "permissive"
PULL_FROM_MIRROR = ("", "all", "digest-only", "tag-only")


class RegistryBlocked(RegistryError):
    """registries.conf forbids pulling from this registry or namespace."""


class ShortNameError(InvalidReference):
    """A short name cannot be resolved unambiguously (short-name-mode = "enforcing")."""


#: (short name, candidates) -> the candidate picked, or None; see :func:`terminal_choice`
Chooser = Callable[[str, list[Reference]], Reference | None]


def terminal_choice(name: str, candidates: list[Reference]) -> Reference | None:
    """Ask on the terminal which candidate an ambiguous short name means, as podman does when
    stdin and stdout are terminals (None when they are not, or no answer comes)."""
    import sys

    if not (os.isatty(0) and os.isatty(1)):
        return None
    err = sys.stderr
    err.write(f"? Please select an image for {name}:\n")
    for i, ref in enumerate(candidates, 1):
        err.write(f"  {i}) {ref}\n")
    for _ in range(3):
        err.write(f"Enter a number [1-{len(candidates)}, default 1]: ")
        err.flush()
        line = sys.stdin.readline()
        if not line:
            return None
        answer = line.strip() or "1"
        if answer.isdigit() and 1 <= int(answer) <= len(candidates):
            return candidates[int(answer) - 1]
    return None


def record_alias(name: str, target: Reference, path: Path | None = None) -> None:
    """Remember the repository a short name was resolved to (podman's short-name-aliases.conf
    cache, which :func:`load` reads back and which wins over the configuration's aliases)."""
    from pallet.fsutil import atomic_write

    path = path if path is not None else alias_cache_path()
    aliases: dict[str, str] = {}
    if path.is_file():
        aliases = {k: str(v) for k, v in _load_aliases_only(path).items() if v is not None}
    aliases[name] = f"{target.domain}/{target.path}"
    lines = ["# short-name aliases chosen interactively (containers-registries.conf(5))", "[aliases]"]
    lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(aliases.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, ("\n".join(lines) + "\n").encode())


def _home() -> Path:
    return Path(os.environ.get("HOME") or os.path.expanduser("~"))


def alias_cache_path() -> Path:
    """Where podman records short-name aliases it chose interactively."""
    if os.geteuid() == 0:
        return Path("/var/cache/containers/short-name-aliases.conf")
    cache = os.environ.get("XDG_CACHE_HOME") or str(_home() / ".cache")
    return Path(cache) / "containers" / "short-name-aliases.conf"


@dataclass(frozen=True)
class Endpoint:
    """A place a namespace is served from: the primary location or one mirror."""

    location: str
    insecure: bool = False
    pull_from_mirror: str = ""  # mirrors only: "", "all", "digest-only", "tag-only"


@dataclass(frozen=True)
class Registry:
    """One ``[[registry]]`` table."""

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[Endpoint, ...] = ()
    origin: str = ""

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.location, self.insecure)


@dataclass(frozen=True)
class PullSource:
    """One place to try for an image: the rewritten reference and how to talk to its registry."""

    reference: Reference
    insecure: bool = False
    mirror: bool = False

    @property
    def registry(self) -> str:
        return self.reference.domain

    @property
    def repository(self) -> str:
        return self.reference.path


@dataclass
class RegistriesConf:
    """The merged configuration. Make it with :func:`load`."""

    registries: list[Registry] = field(default_factory=list)
    #: None: not configured anywhere (short names then mean docker.io, as docker does)
    search: list[str] | None = None
    short_name_mode: str = DEFAULT_SHORT_NAME_MODE
    #: short name -> fully qualified repository (None: erased by a later file)
    aliases: dict[str, Reference | None] = field(default_factory=dict)
    alias_origins: dict[str, str] = field(default_factory=dict)
    search_origin: str = ""
    credential_helpers: list[str] | None = None
    sources: list[Path] = field(default_factory=list)

    # -- lookups --------------------------------------------------------------------------------

    def find(self, name: str) -> Registry | None:
        """The ``[[registry]]`` whose prefix is the longest match of ``name`` (host, repo or ref)."""
        best, best_len = None, 0
        for reg in self.registries:
            if _match_prefix(name, reg.prefix) >= 0 and len(reg.prefix) > best_len:
                best, best_len = reg, len(reg.prefix)
        return best

    def is_insecure(self, host: str) -> bool:
        reg = self.find(host)
        return bool(reg and reg.insecure)

    def check_blocked(self, name: str) -> None:
        """Raise :class:`RegistryBlocked` if ``name`` (host, repository or reference) is blocked."""
        reg = self.find(name)
        if reg is not None and reg.blocked:
            where = f" in {reg.origin}" if reg.origin else ""
            raise RegistryBlocked(
                f"registry {reg.prefix} is blocked in registries.conf{where}: refusing to use {name}"
            )

    def alias(self, name: str) -> tuple[Reference, str] | None:
        """The alias of a short name (no tag or digest) and the file that set it, if any."""
        target = self.aliases.get(name)
        if target is None:
            return None
        return target, self.alias_origins.get(name, "")

    def resolve(self, name: str, choose: Chooser | None = None) -> list[Reference]:
        """Candidate fully qualified references for ``name``, in the order to try them.

        A qualified name is itself (normalised). A short name's alias wins; otherwise each
        unqualified-search registry in order, or docker.io (with ``library/``) when none is set.
        With several registries and short-name-mode enforcing or permissive, ``choose`` (e.g.
        :func:`terminal_choice`) may pick one: the answer is then the only candidate (the caller
        records it with :func:`record_alias` once it pulled).
        """
        ref = parse(name)
        if ref.domain:
            return [normalize(ref)]
        aliased = self.alias(ref.path)
        if aliased is not None:
            target = aliased[0]
            return [normalize(Reference(target.domain, target.path, ref.tag, ref.digest))]
        search = self.search or ["docker.io"]
        candidates = []
        for registry in search:
            with contextlib.suppress(InvalidReference):
                candidates.append(normalize(parse(f"{registry}/{name}")))
        if choose is not None and len(candidates) > 1 and self.short_name_mode != "disabled":
            chosen = choose(ref.path, candidates)
            if chosen is not None:
                return [chosen]
        if self.short_name_mode == "enforcing" and len(search) > 1:
            origin = f" ({self.search_origin})" if self.search_origin else ""
            raise ShortNameError(
                f"short name {name!r} is ambiguous: short-name-mode is enforcing, it has no alias and "
                f"{len(search)} unqualified-search registries are configured{origin}; "
                "use a fully qualified name"
            )
        return candidates

    def endpoints(self, ref: Reference | str) -> list[PullSource]:
        """Where to pull ``ref`` from: matching mirrors in order, then the primary location.

        Raises :class:`RegistryBlocked` for a blocked registry or namespace.
        """
        if isinstance(ref, str):
            ref = parse(ref)
        if not ref.domain:
            raise InvalidReference(f"{ref} is not fully qualified: resolve short names first")
        ref = normalize(ref, default_tag=False)
        text = str(ref)
        reg = self.find(text)
        if reg is None:
            return [PullSource(ref)]
        if reg.blocked:
            self.check_blocked(text)
        digested = ref.digest is not None
        chosen: list[tuple[Endpoint, bool]] = []
        for mirror in reg.mirrors:
            if reg.mirror_by_digest_only and not digested:
                continue
            if mirror.pull_from_mirror == "digest-only" and not digested:
                continue
            if mirror.pull_from_mirror == "tag-only" and digested:
                continue
            chosen.append((mirror, True))
        chosen.append((reg.endpoint, False))
        out = []
        for ep, is_mirror in chosen:
            out.append(PullSource(_rewrite(ref, text, reg.prefix, ep.location), ep.insecure, is_mirror))
        return out

    def push_endpoint(self, ref: Reference | str) -> PullSource:
        """Where to push ``ref``: its own registry (registries.conf redirects pulls only)."""
        if isinstance(ref, str):
            ref = parse(ref)
        ref = normalize(ref, default_tag=False)
        return PullSource(ref, self.is_insecure(ref.domain))


def _rewrite(ref: Reference, text: str, prefix: str, location: str) -> Reference:
    if not location:  # "*.example.com" without a location: settings apply, no rewrite
        return ref
    n = _match_prefix(text, prefix)
    try:
        return parse(location + text[n:])
    except InvalidReference as e:
        raise ConfigError(
            f"registries.conf: rewriting {text} with prefix {prefix!r} to location "
            f"{location!r} gives an invalid reference: {e}"
        ) from None


def _match_prefix(ref: str, prefix: str) -> int:
    """Length of ``prefix`` in ``ref`` if it matches at a component boundary, else -1."""
    if prefix.startswith("*."):
        suffix = prefix[1:]
        i = ref.find(suffix)
        if i < 0 or "/" in ref[:i]:
            return -1
        i += len(suffix)
        if i == len(ref) or ref[i] in ":/@":
            return i
        return -1
    if ref == prefix:
        return len(prefix)
    if len(ref) > len(prefix) and ref.startswith(prefix) and ref[len(prefix)] in ":/@":
        return len(prefix)
    return -1


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: registries docker lets speak plain HTTP by default."""
    h, _ = split_host_port(host)
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


# -- loading ---------------------------------------------------------------------------------------


@dataclass
class _File:
    """One parsed file, before merging."""

    path: str
    registries: list[Registry]
    search: list[str] | None
    short_name_mode: str | None
    aliases: dict[str, Reference | None]
    credential_helpers: list[str] | None


def _config_paths(ctx: Context) -> tuple[Path, bool, list[Path]]:
    """(main file, whether it was asked for explicitly, drop-in directories)."""
    explicit = ctx.registries_conf or os.environ.get("CONTAINERS_REGISTRIES_CONF")
    user_file = _home() / ".config/containers/registries.conf"
    user_dir = _home() / ".config/containers/registries.conf.d"
    if explicit:
        return Path(explicit), True, [SYSTEM_DIR, user_dir]
    if user_file.exists():
        return user_file, False, [user_dir]
    return SYSTEM_CONF, False, [SYSTEM_DIR, user_dir]


def load(
    ctx: Context | None = None, *, dropin_dirs: list[Path] | None = None, alias_cache: Path | None = None
) -> RegistriesConf:
    """Read and merge registries.conf, its drop-ins and the short-name alias cache.

    ``dropin_dirs`` and ``alias_cache`` replace the default locations (tests, embedding).
    """
    from pallet import context as _context

    ctx = ctx or _context.default()
    main, explicit, dirs = _config_paths(ctx)
    if dropin_dirs is not None:
        dirs = list(dropin_dirs)
    conf = RegistriesConf()
    if main.exists() or explicit:
        try:
            first = _load_file(main, force_v2=False)
        except FileNotFoundError:
            raise ConfigError(f"registries configuration {main} does not exist") from None
        _merge(conf, first, initial=True)
        conf.sources.append(main)
    for d in dirs:
        try:
            names = sorted(p for p in os.listdir(d) if p.endswith(".conf"))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise ConfigError(f"reading registries.conf.d {d}: {e.strerror}") from None
        for name in names:
            path = Path(d) / name
            if not path.is_file():
                continue
            try:
                _merge(conf, _load_file(path, force_v2=True))
            except FileNotFoundError:
                continue  # removed while we listed the directory
            conf.sources.append(path)
    cache = alias_cache if alias_cache is not None else alias_cache_path()
    if cache.is_file():
        cached = _load_aliases_only(cache)
        for k, v in cached.items():
            if v is not None:
                conf.aliases[k] = v
                conf.alias_origins[k] = str(cache)
    return conf


def _merge(conf: RegistriesConf, f: _File, initial: bool = False) -> None:
    by_prefix = {r.prefix: r for r in conf.registries}
    for r in f.registries:
        by_prefix[r.prefix] = r
    conf.registries = [by_prefix[p] for p in sorted(by_prefix)]
    if f.search is not None:
        conf.search = list(f.search)
        conf.search_origin = f.path
    if f.short_name_mode:
        conf.short_name_mode = f.short_name_mode
    if f.credential_helpers is not None:
        conf.credential_helpers = list(f.credential_helpers)
    for k, v in f.aliases.items():
        conf.aliases[k] = v
        conf.alias_origins[k] = f.path


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"registries configuration {path}: invalid TOML: {e}") from None
    except IsADirectoryError:
        raise ConfigError(f"registries configuration {path} is a directory") from None
    except PermissionError as e:
        raise ConfigError(f"registries configuration {path}: {e.strerror}") from None


def _load_aliases_only(path: Path) -> dict[str, Reference | None]:
    doc = _read_toml(path)
    return _parse_aliases(doc.get("aliases", {}), path)


def _bool(v: Any, what: str, path: Path) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"registries configuration {path}: {what} must be true or false")
    return v


def _location(v: Any, what: str, path: Path) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"registries configuration {path}: {what} must be a string")
    s = v.rstrip("/")
    if s.startswith(("http://", "https://")):
        raise ConfigError(
            f"registries configuration {path}: invalid {what} {v!r}: URI schemes are not supported"
        )
    return s


def _string_list(v: Any, what: str, path: Path) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"registries configuration {path}: {what} must be a list of strings")
    return list(v)


def _load_file(path: Path, force_v2: bool) -> _File:
    doc = _read_toml(path)
    v1 = doc.get("registries")
    v2_keys = {
        "unqualified-search-registries",
        "registry",
        "short-name-mode",
        "aliases",
        "credential-helpers",
    }
    if isinstance(v1, dict) and any(v1.get(k, {}).get("registries") for k in ("search", "insecure", "block")):
        if force_v2:
            raise ConfigError(
                f"registries configuration {path}: drop-in files must use the version 2 "
                "format, not [registries.search]"
            )
        if v2_keys & doc.keys():
            raise ConfigError(
                f"registries configuration {path}: mixes version 1 ([registries.*]) and version 2 settings"
            )
        doc = _v1_to_v2(v1, path)
    registries: list[Registry] = []
    raw_regs = doc.get("registry", [])
    if not isinstance(raw_regs, list):
        raise ConfigError(f"registries configuration {path}: [[registry]] must be an array of tables")
    for i, r in enumerate(raw_regs):
        registries.append(_parse_registry(r, i, path))
    _check_conflicts(registries, path)
    unique: dict[str, Registry] = {}
    for r in registries:  # the first table with a prefix wins, as containers/image does
        unique.setdefault(r.prefix, r)
    search = None
    if "unqualified-search-registries" in doc:
        search = [
            _location(s, "unqualified-search-registries entry", path)
            for s in _string_list(doc["unqualified-search-registries"], "unqualified-search-registries", path)
        ]
        for s in search:
            if not DOMAIN_RE.fullmatch(s):
                raise ConfigError(
                    f"registries configuration {path}: invalid unqualified-search-registries "
                    f"entry {s!r}: expected HOST[:PORT]"
                )
    mode = doc.get("short-name-mode") or None
    if mode is not None and mode not in SHORT_NAME_MODES:
        raise ConfigError(
            f"registries configuration {path}: invalid short-name-mode {mode!r} "
            f"(expected one of {', '.join(SHORT_NAME_MODES)})"
        )
    helpers = None
    if "credential-helpers" in doc:
        helpers = _string_list(doc["credential-helpers"], "credential-helpers", path)
    aliases = _parse_aliases(doc.get("aliases", {}), path)
    return _File(str(path), [unique[p] for p in sorted(unique)], search, mode, aliases, helpers)


def _v1_to_v2(v1: dict[str, Any], path: Path) -> dict[str, Any]:
    regs: dict[str, dict[str, Any]] = {}

    def get(loc: str) -> dict[str, Any]:
        return regs.setdefault(loc, {"location": loc})

    for loc in _string_list(v1.get("block", {}).get("registries", []), "registries.block", path):
        get(loc)["blocked"] = True
    for loc in _string_list(v1.get("insecure", {}).get("registries", []), "registries.insecure", path):
        get(loc)["insecure"] = True
    out: dict[str, Any] = {"registry": list(regs.values())}
    search = v1.get("search", {}).get("registries")
    if search is not None:
        out["unqualified-search-registries"] = search
    return out


def _parse_registry(r: Any, i: int, path: Path) -> Registry:
    where = f"[[registry]] #{i + 1}"
    if not isinstance(r, dict):
        raise ConfigError(f"registries configuration {path}: {where} must be a table")
    location = _location(r.get("location", ""), f"{where} location", path)
    prefix = _location(r.get("prefix", ""), f"{where} prefix", path)
    if not prefix:
        if not location:
            raise ConfigError(f"registries configuration {path}: {where} sets neither prefix nor location")
        prefix = location
    elif not location and not prefix.startswith("*."):
        raise ConfigError(
            f"registries configuration {path}: {where} (prefix {prefix!r}) has no location; "
            "only a *.example.com prefix may omit it"
        )
    if prefix.startswith("*.") and any(c in prefix for c in "/@:"):
        raise ConfigError(
            f"registries configuration {path}: wildcard prefix {prefix!r} must be of the "
            "form *.example.com (no port, namespace, tag or digest)"
        )
    if "pull-from-mirror" in r:
        raise ConfigError(
            f"registries configuration {path}: pull-from-mirror must not be set for the "
            f"non-mirror registry {prefix!r}"
        )
    by_digest = _bool(r.get("mirror-by-digest-only", False), f"{where} mirror-by-digest-only", path)
    mirrors = []
    raw_mirrors = r.get("mirror", [])
    if not isinstance(raw_mirrors, list):
        raise ConfigError(f"registries configuration {path}: {where} mirror must be an array of tables")
    for j, m in enumerate(raw_mirrors):
        mwhere = f"{where} mirror #{j + 1}"
        if not isinstance(m, dict):
            raise ConfigError(f"registries configuration {path}: {mwhere} must be a table")
        mloc = _location(m.get("location", ""), f"{mwhere} location", path)
        if not mloc:
            raise ConfigError(f"registries configuration {path}: {mwhere} has no location")
        pfm = m.get("pull-from-mirror", "")
        if pfm not in PULL_FROM_MIRROR:
            raise ConfigError(
                f"registries configuration {path}: unsupported pull-from-mirror value "
                f"{pfm!r} for mirror {mloc!r} (all, digest-only or tag-only)"
            )
        if by_digest and pfm:
            raise ConfigError(
                f"registries configuration {path}: {prefix!r} sets mirror-by-digest-only and "
                f"its mirror {mloc!r} sets pull-from-mirror; use one of them"
            )
        mirrors.append(
            Endpoint(
                mloc, _bool(m.get("insecure", False), f"{mwhere} insecure", path), "" if pfm == "all" else pfm
            )
        )
    return Registry(
        prefix=prefix,
        location=location,
        insecure=_bool(r.get("insecure", False), f"{where} insecure", path),
        blocked=_bool(r.get("blocked", False), f"{where} blocked", path),
        mirror_by_digest_only=by_digest,
        mirrors=tuple(mirrors),
        origin=str(path),
    )


def _check_conflicts(registries: list[Registry], path: Path) -> None:
    seen: dict[str, Registry] = {}
    for r in registries:
        key = r.location or r.prefix
        other = seen.setdefault(key, r)
        if other.insecure != r.insecure:
            raise ConfigError(
                f"registries configuration {path}: registry {key!r} is defined more than "
                "once with conflicting 'insecure' settings"
            )
        if other.blocked != r.blocked:
            raise ConfigError(
                f"registries configuration {path}: registry {key!r} is defined more than "
                "once with conflicting 'blocked' settings"
            )


def _parse_aliases(raw: Any, path: Path) -> dict[str, Reference | None]:
    if not isinstance(raw, dict):
        raise ConfigError(f"registries configuration {path}: [aliases] must be a table")
    out: dict[str, Reference | None] = {}
    for name, value in raw.items():
        try:
            short = parse(name)
        except InvalidReference as e:
            raise ConfigError(f"registries configuration {path}: invalid alias name {name!r}: {e}") from None
        if short.domain or short.tag or short.digest:
            raise ConfigError(
                f"registries configuration {path}: alias name {name!r} must be a short name "
                "without registry, tag or digest"
            )
        if not isinstance(value, str):
            raise ConfigError(f"registries configuration {path}: alias {name!r} must be a string")
        if value == "":
            out[name] = None
            continue
        try:
            target = parse(value)
        except InvalidReference as e:
            raise ConfigError(
                f"registries configuration {path}: invalid alias {name!r} = {value!r}: {e}"
            ) from None
        if target.tag or target.digest:
            raise ConfigError(
                f"registries configuration {path}: alias {name!r} = {value!r} must not "
                "contain a tag or digest"
            )
        if not target.domain:
            raise ConfigError(
                f"registries configuration {path}: alias {name!r} = {value!r} must name a "
                "registry and repository"
            )
        out[name] = normalize(target, default_tag=False)
    return out
