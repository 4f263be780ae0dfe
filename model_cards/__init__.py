"""model_cards of transmamba."""
