import sys

from wxbackend.cli import main

sys.exit(main())
