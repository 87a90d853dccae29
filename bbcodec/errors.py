"""The exception every user-facing failure derives from (the CLI prints its one-line message)."""


class BBCodecError(Exception):
    """Base class of bbcodec's errors: bad input, corrupt files, missing models, bad parameters."""
