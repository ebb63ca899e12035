"""One module per provider; each vendor SDK is imported by exactly one of them."""
