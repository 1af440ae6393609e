"""Inode numbers for the tree's nodes: stable for the mount's life, never reused.

The kernel may hold an inode number long after a node is gone (`forget` comes
late or never), so numbers are handed out once and kept; the table stays
compact (one small tuple per node ever seen).
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import pyfuse3


class Kind(IntEnum):
    ROOT = 0
    ARCHIVE = 1  # an archive's folder
    PAGE = 2
    THUMBNAIL = 3
    ARCHIVE_FILE = 4  # the original archive file
    METADATA = 5  # number: generation (a new inode after a rename away or a revert)
    SCRATCH = 6  # an editor's temporary file; number: its number
    VIEW = 7  # a view's folder; view: its path from the top ("@tags/artist/alice")
    VIEW_LINK = 8  # a link in a view folder to an archive folder; view: the folder's path
    FOLDER_ICON = 9  # `.directory`: Dolphin's folder settings, the cover as the folder's icon
    UPLOAD = 10  # a file being copied in (fs/uploads.py); number: its number


VIEW_KINDS = (Kind.VIEW, Kind.VIEW_LINK)


class Node(NamedTuple):
    kind: Kind
    arcid: str = ""
    number: int = 0  # pages: the page's index (0-based); see Kind for the others
    view: str = ""  # views: the path of the view folder, names joined by "/"

    @property
    def is_dir(self) -> bool:
        return self.kind in (Kind.ROOT, Kind.ARCHIVE, Kind.VIEW)


ROOT = Node(Kind.ROOT)


class InodeTable:
    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {pyfuse3.ROOT_INODE: ROOT}
        self._inodes: dict[Node, int] = {ROOT: pyfuse3.ROOT_INODE}
        self._next = pyfuse3.ROOT_INODE + 1

    def inode(self, node: Node) -> int:
        inode = self._inodes.get(node)
        if inode is None:
            inode = self._inodes[node] = self._next
            self._nodes[inode] = node
            self._next += 1
        return inode

    def known(self, node: Node) -> int | None:
        """The node's inode if the kernel may have seen it, else None."""
        return self._inodes.get(node)

    def node(self, inode: int) -> Node | None:
        return self._nodes.get(inode)

    def rebind(self, inode: int, node: Node) -> None:
        """The file behind `inode` is now `node` (a rename): the kernel keeps the inode."""
        old = self._nodes.get(inode)
        if old is not None and self._inodes.get(old) == inode:
            del self._inodes[old]
        self._nodes[inode] = node
        self._inodes[node] = inode
