"""A field of a JSON record by key: one meaning for a key in training's JSONL reader
(data/readers.py) and in `bilstm predict --input-format jsonl`.

Its own module, outside the data package: importing that package loads the splits and the
config schema (0.7 s), which predict's start-up cannot afford.
"""

from __future__ import annotations

MISSING = object()


def json_field(record: dict, key: str | int, default: object = None) -> object:
    """record[key]; else the nested value of a dotted key ("meta.review":
    record["meta"]["review"]); else `default`. A key that holds dots itself wins."""
    key = str(key)
    if key in record:
        return record[key]
    node: object = record
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
