"""Data that crosses process boundaries: model cards, engine requests/outputs, KV events."""
