import sys

from mcnflow.cli import main

sys.exit(main())
