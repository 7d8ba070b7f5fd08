"""``python -m atrisk``: the command line."""

from atrisk.cli import main

main()
