"""``python -m kdpipe`` (and ``torchrun -m kdpipe``) is the ``kdpipe`` command."""

from kdpipe.cli.main import main

main()
