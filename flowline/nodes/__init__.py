"""The node types: one module each, declaring one ``NodeType`` (flowline/nodes/base.py), and this list, the only
place that names them all. The request schemas, the engine, the OpenAPI document, the file checks and
export/import read it; none of them names a type. To add a type, write its module and add it here."""

from . import extract_text, formatter, generative_ai
from .base import NodeType

# In the order error messages and the OpenAPI document list them.
ALL: tuple[NodeType, ...] = (extract_text.NODE_TYPE, generative_ai.NODE_TYPE, formatter.NODE_TYPE)
BY_NAME: dict[str, NodeType] = {node_type.name: node_type for node_type in ALL}
NAMES: tuple[str, ...] = tuple(BY_NAME)
