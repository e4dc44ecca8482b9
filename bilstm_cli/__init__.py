"""bilstm: text classification with uni- and bi-directional LSTMs, from the command line."""

__version__ = "0.1.0"
