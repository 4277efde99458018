"""How the store names images and how it finds them by a name a user typed.

Names are stored fully qualified and tagged (``docker.io/library/busybox:latest``,
``localhost/app:1``). New names follow podman's rule (a name without a registry lives under
``localhost/``); lookups try what podman tries: ``localhost/NAME``, then Docker's normalisation
``docker.io/library/NAME``, then the image ID (full or a unique prefix), then any stored name whose
repository path ends in ``/NAME``.
"""

from __future__ import annotations

import re

from pallet.errors import InvalidReference
from pallet.reference import DEFAULT_TAG, Reference, normalize, parse

HEX = re.compile(r"^[a-f0-9]+$")
FULL_ID = re.compile(r"^[a-f0-9]{64}$")


def _is_registry(domain: str) -> bool:
    if not domain:
        return False
    return any(c in domain for c in ".:") or domain == "localhost" or domain.startswith("[")


def normalize_new_name(text: str) -> Reference:
    """The reference a new name (tag, import, load) is stored under, as podman's NormalizeName.

    ``app`` → ``localhost/app:latest``; ``docker.io/busybox`` → ``docker.io/library/busybox:latest``;
    a reference with both tag and digest keeps only the digest.
    """
    ref = parse(text)
    if not _is_registry(ref.domain):
        if ref.name != ref.name.lower():
            raise InvalidReference(f"invalid reference {text!r}: repository name must be lowercase")
        ref = Reference("localhost", ref.name, ref.tag, ref.digest)
    ref = normalize(ref, default_tag=ref.digest is None)
    if ref.tag and ref.digest:
        ref = Reference(ref.domain, ref.path, "", ref.digest)
    return ref


def normalize_docker_name(text: str) -> Reference:
    """Docker's normalisation (``busybox:latest`` → ``docker.io/library/busybox:latest``), for names
    that came from Docker (docker-archive RepoTags)."""
    return normalize(parse(text))


def tag_name(text: str) -> str:
    """A new tag's stored form; refuses digests (docker: 'refusing to create a tag with a digest')."""
    ref = normalize_new_name(text)
    if ref.digest is not None:
        raise InvalidReference(f"invalid tag {text!r}: a tag cannot contain a digest")
    return str(ref)


def candidates(ref: Reference) -> list[Reference]:
    """Fully qualified names a parsed, possibly short reference may stand for, in lookup order."""
    tag = ref.tag or (DEFAULT_TAG if ref.digest is None else "")
    if _is_registry(ref.domain):
        out = [normalize(Reference(ref.domain, ref.path, tag, ref.digest), default_tag=False)]
    else:
        out = [
            Reference("localhost", ref.name, tag, ref.digest),
            normalize(Reference("", ref.name, tag, ref.digest), default_tag=False),
        ]
    return out


def split_name(name: str) -> tuple[str, str]:
    """``repo:tag`` → (repo, tag) for a stored (qualified, tagged) name."""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, ""


def path_suffix_match(repo: str, short_path: str) -> bool:
    """Whether stored repository ``repo`` ends with ``/short_path`` on a component boundary."""
    return repo.endswith("/" + short_path)
