"""The FUSE adapter: inodes and handlers over the library model."""

from .operations import LrrOperations, Ownership, Timeouts

__all__ = ["LrrOperations", "Ownership", "Timeouts"]
