"""tunegate's version, in a module of its own: every part can import it without importing the package's
public API (advisor/__init__.py), which would close an import cycle."""

__version__ = "0.1.0"
