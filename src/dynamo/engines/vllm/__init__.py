"""The vLLM engine adapter; importing it never imports vLLM (only starting the engine does)."""

from dynamo.engines.vllm.args import VllmWorkerConfig, build_parser, parse_vllm_args
from dynamo.engines.vllm.engine import INSTALL_HINT, VllmEngine, import_vllm

__all__ = [
    "INSTALL_HINT",
    "VllmEngine",
    "VllmWorkerConfig",
    "build_parser",
    "import_vllm",
    "parse_vllm_args",
]
