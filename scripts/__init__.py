"""Scripts that reproduce the README's tables (``python -m scripts.NAME``).

They are entry points like ``cli.py``: they sit above every floor of DESIGN.md and may
use the whole toolchain (train, prune, export, bench); nothing imports them.
"""
