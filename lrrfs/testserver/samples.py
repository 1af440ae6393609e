"""Sample libraries of real archives with real images, for tests, benchmarks and demos.

Output is deterministic (fixed seeds, fixed member timestamps, fixed gzip headers), so the
archive ids (SHA-1 of the first 512000 bytes) are stable across runs with the same Pillow.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .store import STATE_FILE

FIXED_DATE = (2024, 1, 2, 3, 4, 6)
FIXED_EPOCH = 1704164646
DEFAULT_PAGE_BYTES = 200_000
PAGE_SIZE = (120, 170)  # pixels of a sample page

Members = list[tuple[str, bytes]]

# ----- images -----


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType
        return ImageFont.load_default()


def page_image(label: str, size: tuple[int, int], seed: int, *, noise: int = 0) -> Image.Image:
    """A page visibly its own: seeded background colour, `label` drawn, optional noise band."""
    rng = random.Random(seed)
    color = (rng.randrange(40, 216), rng.randrange(40, 216), rng.randrange(40, 216))
    img = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.rectangle((2, 2, w - 3, h - 3), outline=(255 - color[0], 255 - color[1], 255 - color[2]))
    draw.text((max(2, w // 10), h // 3), label, fill=(255, 255, 255), font=_font(max(8, h // 6)))
    if noise:
        band = Image.frombytes("RGB", (w, noise), rng.randbytes(w * noise * 3))
        img.paste(band, (0, h - noise))
    return img


def encode(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "jpg":
        img.save(out, "JPEG", quality=85)
    elif fmt == "png":
        img.save(out, "PNG")
    elif fmt == "gif":
        img.convert("P", palette=Image.Palette.ADAPTIVE).save(out, "GIF")
    elif fmt == "webp":
        img.save(out, "WEBP", quality=80, method=4)
    else:
        raise ValueError(f"unknown image format {fmt}")
    return out.getvalue()


def page(
    label: str, fmt: str, seed: int, size: tuple[int, int] = PAGE_SIZE, noise: int = 0
) -> bytes:
    return encode(page_image(label, size, seed, noise=noise), fmt)


def padded_jpeg(label: str, seed: int, total: int) -> bytes:
    """A small real JPEG grown to `total` bytes with random COM segments (still valid)."""
    base = page(label, "jpg", seed, (96, 136))
    rng = random.Random(seed)
    segments = []
    room = total - len(base)
    while room > 4:
        n = min(65533, room - 4)
        segments.append(b"\xff\xfe" + struct.pack(">H", n + 2) + rng.randbytes(n))
        room -= n + 4
    return base[:2] + b"".join(segments) + base[2:]


def padded_png(label: str, seed: int, total: int) -> bytes:
    """A small real PNG grown to `total` bytes with a private ancillary chunk of noise."""
    base = page(label, "png", seed, (96, 136))
    room = total - len(base) - 12
    if room <= 0:
        return base
    data = random.Random(seed).randbytes(room)
    chunk = struct.pack(">I", room) + b"lrFs" + data
    chunk += struct.pack(">I", zlib.crc32(chunk[4:]) & 0xFFFFFFFF)
    return base[:-12] + chunk + base[-12:]  # before IEND


# ----- archive writers -----


def write_zip(path: Path, members: Members, *, compression: int = zipfile.ZIP_STORED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.compress_type = compression
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return path


def write_tar(path: Path, members: Members, *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw:
        stream = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if gz else raw
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), FIXED_EPOCH, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tf.addfile(info, io.BytesIO(data))
        if gz:
            stream.close()
    return path


def write_zip_raw_names(path: Path, members: list[tuple[bytes, bytes]]) -> Path:
    """A zip whose member names are raw bytes without the UTF-8 flag (e.g. Shift-JIS).

    zipfile always flags non-ASCII names as UTF-8, so the archive is written with ASCII
    placeholders of the same length, which are then replaced byte for byte.
    """
    placeholders = [
        (f"~{i:03d}".ljust(len(raw), "_").encode(), raw) for i, (raw, _) in enumerate(members)
    ]
    write_zip(
        path,
        [(ph.decode(), data) for (ph, _), (_, data) in zip(placeholders, members, strict=True)],
    )
    blob = path.read_bytes()
    for ph, raw in placeholders:
        assert blob.count(ph) == 2, "placeholder must occur in the local and central headers"
        blob = blob.replace(ph, raw)
    path.write_bytes(blob)
    return path


def make_archive(
    path: Path, pages: int, *, page_bytes: int = DEFAULT_PAGE_BYTES, fmt: str = "zip"
) -> Path:
    """One synthetic archive of `pages` pages of about `page_bytes` bytes each, made fast.

    Pages alternate JPEG and PNG (a small real image padded with seeded random bytes), stored
    uncompressed. fmt: "zip", "cbz" (zip), "tar", "cbt" (tar) or "tar.gz".
    """
    seed = zlib.crc32(path.name.encode())
    members = []
    for i in range(1, pages + 1):
        maker, ext = (padded_jpeg, "jpg") if i % 2 else (padded_png, "png")
        members.append((f"{i:04d}.{ext}", maker(f"{i}", seed + i, page_bytes)))
    if fmt in ("zip", "cbz"):
        return write_zip(path, members)
    if fmt in ("tar", "cbt", "tar.gz"):
        return write_tar(path, members, gz=fmt == "tar.gz")
    raise ValueError(f"unknown archive format {fmt!r}")


# ----- the sample library -----


def _numbered(
    names: Iterable[str],
    fmt_of: dict[str, str] | None = None,
    seed: int = 0,
    size: tuple[int, int] = PAGE_SIZE,
    noise: int = 0,
) -> Members:
    out = []
    for i, name in enumerate(names):
        fmt = name.rsplit(".", 1)[-1].lower().replace("jpeg", "jpg")
        out.append((name, page(name.rsplit("/", 1)[-1], fmt, seed + i, size, noise)))
    return out


def make_sample_library(
    directory: Path, *, large_mb: int = 0, seed_state: bool = True
) -> list[Path]:
    """Write the sample library into `directory`; returns the archive paths.

    The first five archives mirror the test set of the recordings in lrr-samples (same file
    names, same member names); the others cover the traps a client must survive. With
    seed_state, a .lrrfs-server.json gives a few archives tags and a summary (the rest stay
    untagged).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = [
        write_zip(
            d / "Simple Comic [Tester].cbz",
            _numbered(["01.png", "02.png", "03.png"], seed=10, noise=4),
        ),
        write_zip(
            d / "Nested Folder Test.zip",
            _numbered(
                [
                    "chapter 1/cover.jpg",
                    "chapter 1/page 1.jpg",
                    "chapter 2/page 2.jpg",
                    "chapter 2/page 10.jpg",
                    "chapter 2/ページ #3 & 50%.png",
                ],
                seed=20,
            ),
            compression=zipfile.ZIP_DEFLATED,
        ),
        write_zip(d / "Tiny_Two.zip", _numbered(["a.webp", "b.gif"], seed=30, size=(40, 60))),
        write_zip(
            d / "Weird Names.zip",
            _numbered(
                ["01 a+b.png", "02 c%20d.png", "日本語ページ.png", "deep/er/03 q?x=1#h.png"],
                seed=40,
                size=(40, 60),
            ),
        ),
        write_zip(d / '日本語 タイトル "q".cbz', _numbered(["1.png"], seed=50, size=(30, 30))),
        write_zip_raw_names(
            d / "Shift-JIS Names.zip",
            [
                ("表紙.jpg".encode("shift_jis"), page("cover", "jpg", 60)),
                ("ページ01.png".encode("shift_jis"), page("p1", "png", 61)),
                ("ページ02.png".encode("shift_jis"), page("p2", "png", 62)),
            ],
        ),
        write_zip(d / "series-a" / "Volume 1.cbz", _numbered(["001.jpg", "002.jpg"], seed=70)),
        write_zip(d / "series-b" / "Volume 1.cbz", _numbered(["001.jpg", "002.jpg"], seed=80)),
        write_zip(d / "Untagged Archive.zip", _numbered(["1.jpg", "2.png"], seed=90)),
        write_tar(
            d / "formats" / "Tar Comic.cbt", _numbered(["p1.png", "p2.jpg", "p10.png"], seed=100)
        ),
        write_tar(
            d / "formats" / "Gzip Tar Comic.tar.gz",
            _numbered(["1.jpg", "2.jpg"], seed=110),
            gz=True,
        ),
        write_zip(
            d / "formats" / "Deflated Pages.zip",
            [
                *_numbered(["1.png", "2.png", "3.jpg"], seed=120),
                ("ComicInfo.xml", b"<ComicInfo/>\n"),
            ],
            compression=zipfile.ZIP_DEFLATED,
        ),
        write_zip(
            d / "formats" / "Stored Pages.zip",
            [*_numbered(["1.png", "2.png", "3.jpg"], seed=130), ("notes.txt", b"not a page\n")],
        ),
        write_zip(
            d / "Same Names.zip",
            _numbered(["a/001.jpg", "a/002.jpg", "b/001.jpg", "b/002.jpg"], seed=140),
        ),
        write_zip(
            d / "Hostile Names.zip",
            _numbered(["../../escape.png", "/abs.png", "ok.png"], seed=150, size=(40, 60)),
        ),
    ]
    if large_mb > 0:
        page_bytes = 500_000  # many pages of a realistic size
        count = max(1, large_mb * 1_000_000 // page_bytes)
        paths.append(make_archive(d / "Large Archive.zip", count, page_bytes=page_bytes))
    if seed_state:
        _seed_state(d)
    return paths


def _seed_state(d: Path) -> None:
    archives = {
        "series-a/Volume 1.cbz": {
            "tags": f"series:example,artist:alice,date_added:{FIXED_EPOCH}",
            "summary": "First volume, series A.",
        },
        "series-b/Volume 1.cbz": {
            "tags": f"series:example,artist:bob,date_added:{FIXED_EPOCH}",
            "summary": "First volume, series B.",
        },
        "formats/Tar Comic.cbt": {"tags": f"format:tar,date_added:{FIXED_EPOCH}"},
    }
    (d / STATE_FILE).write_text(
        json.dumps({"archives": archives}, ensure_ascii=False, indent=1), encoding="utf-8"
    )
