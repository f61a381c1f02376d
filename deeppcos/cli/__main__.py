"""``python -m deeppcos.cli``: the command line."""

from deeppcos.cli import main

main()
