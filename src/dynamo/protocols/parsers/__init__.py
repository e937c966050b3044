"""Parsers of model output: tool calls and reasoning, incremental, one small module a family.

`registry` maps the names workers take (`--dyn-tool-call-parser hermes`) to parsers;
`pipeline.OutputParser` runs a choice's text through both.
"""
