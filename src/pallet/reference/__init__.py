"""Image references: the Docker grammar ``[DOMAIN/]PATH[:TAG][@DIGEST]`` and its normalisation.

``parse`` checks the grammar and keeps what was written; ``parse_normalized`` applies Docker's
defaults (``fedora`` → ``docker.io/library/fedora:latest``). Short-name *resolution* across a
list of registries is registries.conf's business (``pallet.config.registries``).
"""

from __future__ import annotations

import re

from pallet.content.digest import Digest, InvalidDigest
from pallet.errors import InvalidReference
from pallet.records import dataclass, replace

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"

PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT)
DOMAIN_RE = re.compile(_DOMAIN)
TAG_RE = re.compile(r"[\w][\w.-]{0,127}")


def __getattr__(name: str) -> object:
    """``PATH_RE`` (a whole repository path; the registry server's) compiled on first use: every
    ``pallet run`` parses a reference, and compiling costs ~0.25 ms."""
    if name == "PATH_RE":
        value = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Reference:
    """A parsed reference. ``domain`` is "" for a name written without one (not yet normalised)."""

    domain: str
    path: str
    tag: str = ""
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """``domain/path``: the repository's full name."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def repository(self) -> str:
        return self.name

    @property
    def familiar_name(self) -> str:
        """The name as docker prints it: without docker.io/ and library/."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        return self.path[len(OFFICIAL_PREFIX):] if self.path.startswith(OFFICIAL_PREFIX) else self.path

    @property
    def is_qualified(self) -> bool:
        return bool(self.domain)

    def with_tag(self, tag: str) -> Reference:
        if not TAG_RE.fullmatch(tag):
            raise InvalidReference(f"invalid tag {tag!r}: tags are up to 128 of [A-Za-z0-9_.-], not starting "
                                   "with . or -")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=Digest(digest))

    def name_only(self) -> Reference:
        return Reference(self.domain, self.path)

    @property
    def object(self) -> str:
        """What to ask a registry's /manifests/ for: the digest if pinned, else the tag."""
        return str(self.digest) if self.digest else (self.tag or DEFAULT_TAG)

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    def familiar(self) -> str:
        s = self.familiar_name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's rule: the first component is a domain if it has '.', ':', is localhost, or has capitals."""
    first, sep, rest = name.partition("/")
    if sep and (any(c in first for c in ".:") or first == "localhost" or first.lower() != first
                or first.startswith("[")):
        return first, rest
    return "", name


def parse(text: str) -> Reference:
    """Parse ``text`` as written (no defaults). Raises InvalidReference naming the bad part."""
    if not isinstance(text, str) or not text:
        raise InvalidReference("invalid reference: empty")
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReference(f"invalid reference {text!r}: contains white space")
    rest, digest = text, None
    if "@" in rest:
        rest, _, dig = rest.partition("@")
        try:
            digest = Digest(dig)
        except InvalidDigest as e:
            raise InvalidReference(f"invalid reference {text!r}: {e}") from None
        if not rest:
            raise InvalidReference(f"invalid reference {text!r}: missing repository name before @")
    tag = ""
    # a ':' after the last '/' is a tag separator; before it, it is a port
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not TAG_RE.fullmatch(tag):
            raise InvalidReference(
                f"invalid reference {text!r}: bad tag {tag!r} (up to 128 of [A-Za-z0-9_.-], "
                "not starting with . or -)")
    if not rest:
        raise InvalidReference(f"invalid reference {text!r}: missing repository name")
    domain, path = _split_domain(rest)
    if domain and not DOMAIN_RE.fullmatch(domain):
        raise InvalidReference(f"invalid reference {text!r}: bad registry host {domain!r}")
    if not path:
        raise InvalidReference(f"invalid reference {text!r}: missing repository name after {domain!r}")
    for comp in path.split("/"):
        if PATH_COMPONENT_RE.fullmatch(comp):
            continue
        if comp.lower() != comp and PATH_COMPONENT_RE.fullmatch(comp.lower()):
            raise InvalidReference(f"invalid reference {text!r}: repository name must be lowercase")
        raise InvalidReference(
            f"invalid reference {text!r}: bad path component {comp!r} (lowercase letters, digits and "
            "separators . _ __ -)" if comp else f"invalid reference {text!r}: empty path component")
    name = f"{domain}/{path}" if domain else path
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(f"invalid reference {text!r}: repository name longer than "
                               f"{NAME_TOTAL_LENGTH_MAX} characters")
    return Reference(domain, path, tag, digest)


def normalize(ref: Reference, default_tag: bool = True) -> Reference:
    """Docker's defaults: docker.io for no domain, library/ for one-component docker.io names, :latest."""
    domain, path = ref.domain, ref.path
    if not domain or domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    tag = ref.tag
    if default_tag and not tag and ref.digest is None:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, ref.digest)


def parse_normalized(text: str, default_tag: bool = True) -> Reference:
    """``fedora`` → ``docker.io/library/fedora:latest``; ``user/app`` → ``docker.io/user/app:latest``."""
    return normalize(parse(text), default_tag=default_tag)


def is_short_name(text: str) -> bool:
    """A name without a registry domain, subject to registries.conf's search and aliases."""
    return not parse(text).domain


def split_host_port(domain: str) -> tuple[str, int | None]:
    """``[::1]:5000`` → ("::1", 5000); ``localhost`` → ("localhost", None)."""
    if domain.startswith("["):
        host, _, rest = domain[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, _, port = domain.partition(":")
    return host, int(port) if port else None
