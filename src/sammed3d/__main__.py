"""``python -m sammed3d`` -> the CLI."""

import sys

from sammed3d.cli import main

sys.exit(main())
