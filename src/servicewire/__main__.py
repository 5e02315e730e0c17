"""``python -m servicewire``: the same as the ``servicewire`` command."""

import sys

from servicewire.cli import main

if __name__ == "__main__":
    sys.exit(main())
