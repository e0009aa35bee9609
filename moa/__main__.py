import sys

from moa.cli import main

sys.exit(main())
