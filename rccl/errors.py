"""The one base of every error rccl raises for a bad input or an impossible request.

A command-line tool catches `RcclError`, prints `PROG: error: MESSAGE` and exits 2; anything else is a bug
and keeps its traceback. Each room subclasses it (ConfigError, ManifestError, LayoutError, ...), also
deriving from the builtin it refines (ValueError for bad values, RuntimeError for what cannot be done
here) so that code catching the builtin keeps working.
"""
from __future__ import annotations


class RcclError(Exception):
    """An error whose message names the thing at fault and says what to do; safe to show a user as is."""
