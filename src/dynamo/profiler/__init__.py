"""The DGDR profiler: sweep engine configurations against an SLA, pick, write the graph."""
