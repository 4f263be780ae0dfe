"""conversion of transmamba."""
