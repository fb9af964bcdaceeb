"""Errors a user can cause. The CLI prints their message and exits non-zero."""

from __future__ import annotations


class TumorsegError(Exception):
    """A problem with the user's input: a file, a folder or an option."""


class DataError(TumorsegError):
    """A data file or folder that cannot be used. The message names the path."""


class TooLargeError(DataError):
    """An image, volume or upload beyond the size limits (the server answers it with 413)."""


class CheckpointError(TumorsegError):
    """A checkpoint that is missing, truncated, tampered with or invalid."""


class WriteError(TumorsegError):
    """An output file that cannot be written. The message names the file the user asked for."""


class MissingExtraError(DataError):
    """A file whose type needs optional dependencies that are not installed (the server answers 415)."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal; the CLI exits with 128 + its number (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, signum: int = 2, said: bool = False) -> None:
        super().__init__(signum)
        self.signum = signum
        self.said = said  # whether the loop already said what was saved and how to go on
