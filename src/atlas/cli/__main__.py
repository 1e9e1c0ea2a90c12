"""`python -m atlas.cli`: the `atlas` command without its console script."""

import sys

from atlas.cli import main

sys.exit(main())
