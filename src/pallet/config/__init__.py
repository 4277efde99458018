"""The containers-common configuration files pallet honours, as podman, skopeo and buildah read them.

- :mod:`pallet.config.registries`: containers-registries.conf(5) and its .d drop-ins
  (search registries, aliases, mirrors, blocked and insecure registries).
- :mod:`pallet.config.auth`: containers-auth.json(5), docker's config.json, credential helpers.
- :mod:`pallet.config.certs`: containers-certs.d(5), TLS contexts with extra CAs and client certs.
- :mod:`pallet.config.policy`: containers-policy.json(5), which images may be pulled.

Each module is imported on its own; nothing here is loaded until asked.
"""
