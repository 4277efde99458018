"""Pallet: the container stack in Python, with no daemon.

Kept import-free on purpose: ``pallet-runtime`` imports this package on every container start,
so public APIs (``pallet.images``, ...) are subpackages imported on use.
"""

__version__ = "0.1.0"
