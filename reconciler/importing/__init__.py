"""Importing the live world as a desired-state repo (pure): what `portside import` writes.

The shell (``reconciler.commands.importer``) reads MetalLB's objects, the Services and the
tunnels; this package turns those plain values into documents and files, deterministically, so
a second import of the same world is byte-identical.
"""

from reconciler.importing.documents import (
    ImportedWorld,
    LiveMetalLB,
    LiveRemoteTunnel,
    import_world,
)

__all__ = ["ImportedWorld", "LiveMetalLB", "LiveRemoteTunnel", "import_world"]
