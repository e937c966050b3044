"""`python -m dynamo.sglang`: a Dynamo worker serving an SGLang engine."""
