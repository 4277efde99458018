"""The OCI distribution API: a client (``pallet.registry.client``) and a server
(``pallet.registry.server``)."""
