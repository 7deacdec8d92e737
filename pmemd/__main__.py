import sys

from pmemd.cli import main

sys.exit(main())
