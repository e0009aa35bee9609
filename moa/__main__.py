import sys

from moa.cli.main import main

sys.exit(main())
