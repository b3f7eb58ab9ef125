"""``python -m ownloop`` runs the CLI."""

from ownloop.cli import main

main()
