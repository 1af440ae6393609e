"""The views in the tree: view folders, and the links in them to archive folders.

A link is relative (`@tags/artist/alice/Title -> ../../../Title`), so it works
wherever the mount is, and programs that copy a tree without following links
(rsync -a, cp -r, tar) copy each archive once, as its folder, and views as links.
`@files` links to the archives' own files (`@files/x.cbz -> ../Title/x.cbz`), for
backups that follow links (`rsync -aL`, `cp -L`).
"""

from __future__ import annotations

import errno
import sys

import pyfuse3

from ..library import Library
from ..library.views import FILES
from .inodes import Kind, Node


def view_node(path: str) -> Node:
    # Interned: the inode table keeps every node it ever saw.
    return Node(Kind.VIEW, view=sys.intern(path))


def path_of(node: Node) -> tuple[str, ...]:
    return tuple(node.view.split("/"))


async def child(library: Library, parent: Node, name: str) -> Node | None:
    """The subfolder or link `name` in the view folder `parent`, None if there is none."""
    path = path_of(parent)
    folder = await library.view(path)
    if folder is None:
        return None
    if folder.files:
        arcid = (await library.files_view()).get(name)
        return None if arcid is None else Node(Kind.VIEW_LINK, arcid, view=parent.view)
    if name in folder.folders or (
        folder.any_name and await library.view((*path, name)) is not None
    ):
        return view_node(f"{parent.view}/{name}")
    if folder.order:
        arcid = library.view_links(folder).get(name)
        return None if arcid is None else Node(Kind.VIEW_LINK, arcid, view=parent.view)
    archive = library.find(name)
    if archive is not None and archive.arcid in folder.members:
        return Node(Kind.VIEW_LINK, archive.arcid, view=parent.view)
    return None


async def entries(library: Library, node: Node) -> tuple[list[str], list[Node]]:
    """A view folder's listing: its subfolders and links, sorted by name."""
    folder = await library.view(path_of(node))
    if folder is None:
        raise pyfuse3.FUSEError(errno.ENOENT)
    if folder.files:
        files = await library.files_view()
        return list(files), [Node(Kind.VIEW_LINK, a, view=node.view) for a in files.values()]
    found = {name: view_node(f"{node.view}/{name}") for name in folder.folders}
    for name, arcid in library.view_links(folder).items():
        found[name] = Node(Kind.VIEW_LINK, arcid, view=node.view)
    names = sorted(found)
    return names, [found[name] for name in names]


async def link_target(library: Library, node: Node) -> bytes:
    """Where a link points: up to the top, then the archive's folder (and in `@files`,
    its file)."""
    depth = node.view.count("/") + 1
    target = "../" * depth + library.get(node.arcid).name
    if node.view == FILES:
        target += "/" + (await library.archive_file(node.arcid)).name
    return target.encode("utf-8", "surrogateescape")
