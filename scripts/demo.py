"""`make demo`: the main job end to end, offline. Filled in as the image issue lands."""

import sys

sys.exit("demo: not yet available")
