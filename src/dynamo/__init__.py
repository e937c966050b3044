"""pydynamo: a Python implementation of NVIDIA Dynamo's distributed LLM serving."""

__version__ = "0.1.0"
