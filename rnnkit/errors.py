"""One exception type for bad input: its message is one line that names the problem and the fix.

It subclasses ValueError, so library callers can catch the usual exception; the command line
catches it and prints the line without a traceback.
"""


class RnnkitError(ValueError):
    """Bad input from the user: a one-line message naming what is wrong and what to do."""
