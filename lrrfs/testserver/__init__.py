"""lrrfs.testserver: an LRR-compatible HTTP server over a folder of real archive files.

It answers like a real LANraragi server of generation 0.9 (0.9.81) or 0.7 (0.7.9), as recorded
in /work/shared/lrr-samples, so that lrrfs can be tested, benchmarked and demonstrated without
a LANraragi install. Standard library plus Pillow (thumbnails). Loopback only.

Library: DIR is scanned recursively for .zip .cbz .tar .tar.gz .tgz .cbt files (hidden files
and folders skipped). arcid = SHA-1 of the first 512000 bytes; title = file name without its
last suffix; pages = image members in the generation's reading order. Member names with '..'
or a leading '/' are served under their normalized in-archive name ("../../a.png" -> "a.png";
a name that collides with an earlier member is dropped): nothing outside the archive can ever
be read, and nothing is extracted to disk.

Saved state: DIR/.lrrfs-server.json, written atomically (temp file + os.replace) on every edit,
read at start. Tests may write it before starting the server to seed what a file name cannot
carry (titles with '/', NUL, control characters, empty titles...). Format, every field optional:

    {
      "archives": {
        "rel/path.zip": {"title": str, "tags": str, "summary": str,
                         "isnew": bool, "progress": int, "lastreadtime": int}
      },
      "categories": [
        {"id": "SET_<n>", "name": str, "archives": [arcid...], "search": str,
         "pinned": 0|1, "last_used": int}
      ]
    }

Keys of "archives" are paths relative to DIR with '/' separators. Defaults: title from the
file name, tags "date_added:<file mtime>" (0.9) or "" (0.7), summary "", isnew true, progress
and lastreadtime 0. Without a "categories" key, a 0.9 server starts with a "🔖 Favorites"
category like a fresh real server. The 0.7 "extracted" state (pagecount known) is not saved.

Use: TestServer(...) (below), `python -m lrrfs.testserver --library DIR --port 0` or
`lrrfs demo-server`; fault injection (--faults): see lrrfs.testserver.faults.
"""

from .server import TestServer

__all__ = ["TestServer"]
