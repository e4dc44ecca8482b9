"""Data loading: built-in data sets, local files, and the train/validation/test splits."""

from bilstm_cli.data.splits import (
    Dataset,
    Splits,
    load_builtin_split,
    load_splits,
    read_labelled,
    summarize,
)

__all__ = ["Dataset", "Splits", "load_builtin_split", "load_splits", "read_labelled", "summarize"]
