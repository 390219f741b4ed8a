"""``python -m dogo`` (what ``torchrun -m dogo pretrain ...`` runs)."""

import sys

from dogo.cli import main

sys.exit(main())
