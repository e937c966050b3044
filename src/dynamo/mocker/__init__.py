"""`python -m dynamo.mocker`: simulated vLLM workers (no GPU) registered like real ones."""
