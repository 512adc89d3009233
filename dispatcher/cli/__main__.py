"""``python -m dispatcher.cli``: the same as the ``dispatcher`` command."""

from dispatcher.cli.commands import main

main()
