"""The LANraragi API of the test server: one method per route, per generation quirks inline.

The routing core is in routing.py, the routes by concern in read_routes.py,
write_routes.py and search_routes.py.
"""

from __future__ import annotations

from .routing import Config, Request, clean_line, split_tags
from .search_routes import SearchRoutes, matches


class Api(SearchRoutes):
    """Routes requests to handlers; holds the library, the thumbnails and the job queue."""


__all__ = ["Api", "Config", "Request", "clean_line", "matches", "split_tags"]
