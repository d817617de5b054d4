"""The components this plugin registers (config classes only at import; torch and the media libraries are
imported inside each build)."""

from __future__ import annotations

import mmcore
