"""The FUSE adapter: inodes and handlers over the library model."""

from .errors import cancel_in_flight
from .operations import LrrOperations, Ownership, Timeouts

__all__ = ["LrrOperations", "Ownership", "Timeouts", "cancel_in_flight"]
