"""Exceptions of the data package, kept apart so every module can raise them without import cycles."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """The files of a data set were found nowhere; the message names every place looked and how to fix it."""


class IdxFormatError(ValueError):
    """A file is not a well-formed IDX file for its role; the message names the file and the problem."""
