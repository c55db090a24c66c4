"""iwo-lite: a durable loop of six coding agents on DBOS and one SQLite file.

This package root holds only the version, so that importing it costs nothing.
"""

__version__ = "0.1.0"
