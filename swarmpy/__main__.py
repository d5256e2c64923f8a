import sys

from swarmpy.cli.main import main

sys.exit(main())
