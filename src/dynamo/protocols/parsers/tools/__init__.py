"""Tool-call families: one module each, a `FORMAT` (or several) built on `tool_engine`."""
