"""``python -m dogo`` (what ``torchrun -m dogo pretrain ...`` runs)."""

import sys

from dogo.guards.signals import starting

starting(sys.argv[1:])  # Ctrl-C while dogo starts up (imports torch): one line and exit 130, never a traceback

from dogo.cli import main  # noqa: E402

sys.exit(main())
