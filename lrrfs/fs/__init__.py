"""The FUSE adapter: inodes and handlers over the library model."""

from .operations import LrrOperations, Timeouts

__all__ = ["LrrOperations", "Timeouts"]
