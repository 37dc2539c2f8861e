"""``python -m torchsmith.trainer ARGS``, so ``torchrun -m torchsmith.trainer ARGS`` launches
``torchsmith train ARGS`` on every process."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
