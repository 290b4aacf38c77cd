"""``extract_text``: the text of an uploaded PDF (extracted once, at upload), else the node's input unchanged."""

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, fields

from ..data import db
from .base import InputRejected, NodeContext, NodeType


class ExtractTextConfigSchema(Schema):
    """``extract_text``: the text of an uploaded PDF (``file_id``), else the run's input file, else the input."""

    file_id = fields.UUID(load_default=None)


def run(config: Mapping[str, Any], text: str, ctx: NodeContext) -> tuple[str, str | None]:
    """Return the stored text of the node's file, else of the run's input file, else ``text``.

    :raise InputRejected: the file was deleted since.
    """
    file_id = config["file_id"] or ctx.input_file_id
    if file_id is None:
        return text, "no file given: the input text passed through unchanged"
    with ctx.connection() as conn:
        row = db.one(conn, "get_file_text", file_id=file_id)
    if row is None:
        raise InputRejected(f"file {file_id} not found (it may have been deleted)")
    source = "the node's" if config["file_id"] else "the run's input"
    return row["text_content"], f"text of {source} file {file_id}, extracted with pypdf at upload"


NODE_TYPE = NodeType(
    name="extract_text",
    config_schema=ExtractTextConfigSchema(),
    run=run,
    waits_outside=False,
    file_keys=("file_id",),
    component="ExtractText",
    description="An `extract_text` node: the text of the uploaded PDF `file_id` (else of the run's input file; "
    "else the input passes through).",
)
