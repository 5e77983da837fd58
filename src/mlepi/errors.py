"""The one base class of the errors that are the user's to fix: a bad config, a wrong or missing file, an
unstable structure, an SCF that does not converge.

Each module declares its own errors as subclasses of :class:`MlepiError` (and of the built-in exception they
are a kind of, such as ``ValueError``). The CLI prints an ``MlepiError`` as one line that names the field or
file and says what to do, and exits with status 2; any other exception is a bug and keeps its traceback.
This module imports nothing, so that every module can import it.
"""


class MlepiError(Exception):
    """An error the user can fix from its message (config, input files, settings); not a bug."""
