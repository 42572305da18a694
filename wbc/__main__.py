import sys

from wbc.cli import main

sys.exit(main())
