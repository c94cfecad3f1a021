"""``python -m avssl`` (and ``torchrun -m avssl``) runs the command line."""
import sys

from avssl.cli import main

sys.exit(main())
