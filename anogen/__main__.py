import sys

from anogen.cli import main

sys.exit(main())
