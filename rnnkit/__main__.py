import sys

from rnnkit.cli import main

sys.exit(main())
