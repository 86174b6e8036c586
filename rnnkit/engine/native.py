"""The `native` backend: the BPTT time loop in C++ (placeholder until the extension lands)."""


def unsupported(cell, xw):
    """None if the native backend can run this, else a short reason ("quiet" = no warning)."""
    return "quiet"
