"""The distributed runtime: addressing, configuration, discovery, request and event planes."""
