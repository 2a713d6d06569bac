"""The one exception the engine raises: a message a person can act on."""


class PkiError(Exception):
    """A bad input or a state the engine refuses to work on.

    ``code`` is a short stable identifier (for tests and callers), the message names the bad value
    and what would be valid.
    """

    def __init__(self, message, code="invalid"):
        super().__init__(message)
        self.code = code
