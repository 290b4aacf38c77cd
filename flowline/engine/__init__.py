"""The run engine: ``runner`` executes a workflow's nodes and records every step (sync and async runs alike);
``errors`` names what can go wrong in a run. Node types (flowline/nodes/) import only ``errors``."""
