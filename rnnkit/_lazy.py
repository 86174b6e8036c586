"""A package's names imported on first use, not with the package (PEP 562): `import rnnkit` (and rnnkit.text,
rnnkit.data) load no torch until a name that needs it is read, so that the commands that use none start without it
and a Ctrl-C in torch's import is the command line's one line (see rnnkit.cli._import_torch)."""

import importlib


def lazy_names(package: str, where: dict[str, str], namespace: dict):
    """The package's module-level __getattr__ and __dir__: a name of `where` (name -> its submodule) is imported
    from `package`.<submodule> when first read and kept in `namespace` (the package's globals()); any other
    identifier is tried as a submodule (rnnkit.text.ngram, as an eager package import once loaded them)."""

    def __getattr__(name):
        if name in where:
            value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
            namespace[name] = value
            return value
        if name.isidentifier() and not name.startswith("__"):  # (a name only: 'cells.gru' is none)
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{package}.{name}":
                    raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted({*namespace, *where})

    return __getattr__, __dir__
