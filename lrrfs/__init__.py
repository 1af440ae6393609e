"""lrrfs: mount a LANraragi library as a folder tree with FUSE."""

__version__ = "0.1.0"
