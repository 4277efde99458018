"""The OCI runtime (``pallet-runtime``): bundles in, containers out; runc-compatible.

It knows nothing of images and imports nothing from the rest of pallet except ``pallet.errors``;
its import path is the standard library and ctypes, because it starts once per container.
"""
