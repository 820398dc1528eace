"""One module per ``anogen`` sub-command; each exposes ``register(subparsers)``."""
