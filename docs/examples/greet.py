"""A function that knows who calls it."""

import dagen


def greet(greeting: str = "hello") -> str:
    """Greet the caller by the name in their certificate."""
    who = dagen.caller()          # a dagen.Identity, or None when called locally
    if who is None:
        return f"{greeting}, local user"
    return f"{greeting}, {who.name} (certificate {who.serial_hex})"
