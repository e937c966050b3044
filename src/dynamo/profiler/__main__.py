"""`python -m dynamo.profiler`."""

import sys

from dynamo.profiler.main import main

sys.exit(main())
