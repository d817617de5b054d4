"""A plugin whose import never finishes (it sleeps): every command, --help included, must still return."""

import time

time.sleep(600)
