"""`python -m dynamo.planner`: the SLA planner (see `dynamo.planner.main`)."""

import sys

from dynamo.planner.main import main

if __name__ == "__main__":
    sys.exit(main())
