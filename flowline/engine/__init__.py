"""The run engine: ``runner`` executes a workflow's nodes and records every step (sync and async runs alike),
fenced by the run's lease; ``providers`` are the LLM clients a generative_ai node calls through the run's context.
How a step fails is the node layer's (flowline/nodes/base.py)."""
