"""Descriptors, image manifests and indexes: parsed, validated, and kept with their exact bytes.

A manifest's identity is the digest of its bytes, so parsed objects always carry ``raw``; code
that stores or pushes a manifest uses ``raw``, never a re-serialisation.
"""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from pallet.content import mediatypes as mt
from pallet.content.digest import Digest, InvalidDigest
from pallet.content.platform import Platform
from pallet.errors import ContentError


class InvalidManifest(ContentError):
    """Manifest or index JSON that does not follow the spec."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str = ""
    data: str = ""  # base64, embedded content (image-spec descriptor "data")

    @classmethod
    def from_dict(cls, d: Any, where: str = "descriptor") -> Descriptor:
        if not isinstance(d, dict):
            raise InvalidManifest(f"{where}: expected an object")
        media_type = d.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            raise InvalidManifest(f"{where}: mediaType missing")
        try:
            digest = Digest(d.get("digest", ""))
        except InvalidDigest as e:
            raise InvalidManifest(f"{where}: {e}") from None
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidManifest(f"{where}: size must be a non-negative integer")
        annotations = d.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise InvalidManifest(f"{where}: annotations must be an object")
        plat = d.get("platform")
        if plat is not None and not isinstance(plat, dict):
            raise InvalidManifest(f"{where}: platform must be an object")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            urls=tuple(d.get("urls") or ()),
            annotations=dict(annotations),
            platform=Platform.from_dict(plat) if plat else None,
            artifact_type=str(d.get("artifactType") or ""),
            data=str(d.get("data") or ""),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform:
            d["platform"] = self.platform.to_dict()
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        if self.data:
            d["data"] = self.data
        return d


@dataclass(frozen=True)
class _Document:
    """What manifests and indexes share: their exact bytes (their identity), their media type,
    and the annotations, subject (referrers API) and artifact type either may carry."""

    raw: bytes
    media_type: str
    _: KW_ONLY
    annotations: dict[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str = ""

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)


@dataclass(frozen=True)
class Manifest(_Document):
    """An OCI image manifest or a Docker schema2 manifest."""

    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def is_index(self) -> bool:
        return False


@dataclass(frozen=True)
class Index(_Document):
    """An OCI image index or a Docker manifest list."""

    manifests: tuple[Descriptor, ...]

    @property
    def is_index(self) -> bool:
        return True

    def for_platform(self, want: Platform) -> Descriptor | None:
        from pallet.content.platform import choose

        candidates = [(d.platform, d) for d in self.manifests if d.platform and d.media_type in mt.MANIFESTS]
        return choose(candidates, want)


def parse(raw: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse manifest or index bytes; ``media_type`` is the Content-Type it came with, if any.

    The JSON's own ``mediaType`` wins when present; when the two disagree the content is refused,
    as the distribution spec requires.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidManifest(f"malformed manifest: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidManifest("malformed manifest: not a JSON object")
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise InvalidManifest("malformed manifest: mediaType must be a string")
    kind = declared or _strip_params(media_type)
    if declared and media_type and _strip_params(media_type) not in ("", declared) and \
            _strip_params(media_type) in mt.MANIFESTS:
        raise InvalidManifest(f"manifest mediaType {declared} does not match content type {media_type}")
    if not kind:
        # OCI lets mediaType be omitted; tell an index from a manifest by its fields.
        kind = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    if doc.get("schemaVersion") != 2:
        if kind in (mt.DOCKER_MANIFEST_V1, mt.DOCKER_MANIFEST_V1_SIGNED) or doc.get("schemaVersion") == 1:
            raise InvalidManifest("Docker schema 1 manifests are not supported; re-push as schema 2")
        raise InvalidManifest("malformed manifest: schemaVersion must be 2")
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise InvalidManifest("malformed manifest: annotations must be an object")
    subject = Descriptor.from_dict(doc["subject"], "subject") if doc.get("subject") is not None else None
    artifact_type = doc.get("artifactType") or ""
    if kind in mt.INDEXES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise InvalidManifest("malformed index: manifests must be a list")
        return Index(
            raw=bytes(raw),
            media_type=kind,
            manifests=tuple(Descriptor.from_dict(e, f"manifests[{i}]") for i, e in enumerate(entries)),
            annotations=annotations,
            subject=subject,
            artifact_type=artifact_type,
        )
    if kind in mt.IMAGE_MANIFESTS:
        layers = doc.get("layers")
        if "config" not in doc:
            raise InvalidManifest("malformed manifest: config missing")
        if not isinstance(layers, list):
            raise InvalidManifest("malformed manifest: layers must be a list")
        return Manifest(
            raw=bytes(raw),
            media_type=kind,
            config=Descriptor.from_dict(doc["config"], "config"),
            layers=tuple(Descriptor.from_dict(e, f"layers[{i}]") for i, e in enumerate(layers)),
            annotations=annotations,
            subject=subject,
            artifact_type=artifact_type,
        )
    raise InvalidManifest(f"unsupported manifest media type {kind!r}")


def _strip_params(media_type: str | None) -> str:
    return (media_type or "").split(";", 1)[0].strip()


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes for content we create (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
