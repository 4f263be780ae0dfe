"""trainers of transmamba."""
