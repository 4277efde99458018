"""Networking errors, all under :class:`pallet.errors.NetworkError`."""

from __future__ import annotations

from pallet.errors import NetworkError, NotFound, UsageError


class NetworkNotFound(NetworkError, NotFound):
    """No network of that name."""


class NetworkExists(NetworkError):
    """A network of that name already exists."""


class NetworkInUse(NetworkError):
    """The network still has containers attached (podman's ``network rm`` exits 2 then)."""

    exit_code = 2


class InvalidNetworkConfig(NetworkError, UsageError):
    """Bad subnet, gateway, name, address, port or alias given by the user."""


class AddressUnavailable(NetworkError):
    """The requested address is taken, or the subnet has no free address left."""


class PortUnavailable(NetworkError):
    """A host port is already published by another container or bound on the host."""


class FirewallError(NetworkError):
    """nft refused a rule change."""


class NotAttached(NetworkError, NotFound):
    """The container is not connected to that network."""
