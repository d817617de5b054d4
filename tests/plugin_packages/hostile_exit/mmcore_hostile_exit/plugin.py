"""A plugin that calls sys.exit(3) while it is imported (it must be left out, not end every command)."""

import sys

sys.exit(3)
