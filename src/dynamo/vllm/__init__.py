"""`python -m dynamo.vllm`: a Dynamo worker serving a vLLM engine."""
