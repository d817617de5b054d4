"""Recipe errors: every problem of a recipe at once, each with its TOML path and the nearest valid name."""

from __future__ import annotations

import difflib


class RecipeError(Exception):
    """An invalid recipe. ``problems`` holds one ``"<toml.path>: <what is wrong>"`` line per problem."""

    def __init__(self, problems: list, source: str = ""):
        self.problems = list(problems)
        self.source = source
        head = f"invalid recipe {source}" if source else "invalid recipe"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))



def nearest_hint(name: str, valid, listing: str) -> str:
    """``"; did you mean 'x'?"`` for the valid name closest to ``name``, else ``"; <listing>: a, b, ..."``."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; {listing}: {', '.join(valid)}"

