"""`python -m blockmig.cli`: the same as the `blockmig` command."""

import sys

from blockmig.cli.parser import main

sys.exit(main())
