"""`python -m dynamo.operator`: reconcile DynamoGraphDeployments into Deployments, Services and
RBAC. Talks to the cluster like any client (in-cluster service account, else KUBECONFIG)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from dynamo.operator.config import OperatorConfig
from dynamo.runtime.config import add_arguments, resolve
from dynamo.runtime.errors import ConfigError, MissingExtraError
from dynamo.runtime.extras import import_extra
from dynamo.runtime.observability import setup_observability

PROG = "python -m dynamo.operator"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_arguments(parser, OperatorConfig, title="operator")
    try:
        config = resolve(OperatorConfig, parser.parse_args(argv))
    except ConfigError as exc:
        parser.error(str(exc))
    try:  # kopf comes with the `operator` extra; --help above works without it
        handlers = import_extra("dynamo.operator.handlers", "operator")
    except MissingExtraError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        setup_observability("operator", config.log_level)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    scope = f"namespace {config.namespace}" if config.namespace else "all namespaces"
    logging.getLogger("dynamo.operator").info("dynamo operator watching %s", scope)
    try:
        asyncio.run(handlers.run(config))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
