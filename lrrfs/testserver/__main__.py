"""python -m lrrfs.testserver: run the test server (same options as `lrrfs demo-server`)."""

import sys

from .cli import main

sys.exit(main())
