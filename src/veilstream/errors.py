"""The root of every error Veilstream reports to a person.

Each layer subclasses `VeilError` for failures caused by input, data or the outside world
(a wrong passphrase, a corrupt file, a full disk). The CLI prints such an error as one
line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class VeilError(Exception):
    """A failure a user can act on; its message says what happened and what to do."""

    exit_code = 1
