"""The ``pallet`` command line: argument parsing and rendering only."""
