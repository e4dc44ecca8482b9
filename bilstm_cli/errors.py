"""The one exception type that means "the user can fix this": the CLI prints it and exits 2."""


class UserError(Exception):
    """A problem with the user's input (config, files, data), not a bug in bilstm."""
