"""`python -m dynamo.router`: the standalone KV router (see `dynamo.router.main`)."""

import sys

from dynamo.router.main import main

if __name__ == "__main__":
    sys.exit(main())
