"""`python -m dynamo.trtllm`: a Dynamo worker serving a TensorRT-LLM engine."""
