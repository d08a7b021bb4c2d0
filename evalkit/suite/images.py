"""Images a case sends: local files read at plan time into data URLs, checked before sending.

Why: a missing, oversized or non-image file must be a located problem at `evalkit validate`,
not a 400 on every request of a run. The format is told by the file's first bytes (not its
name) and the dimensions are read from its header, with no imaging library, so validating a
suite of images stays fast; the dimensions feed the token estimate (`models/tokens.py`).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_IMAGE_BYTES = 20 * 2**20  # OpenAI's limit per image in a chat request
FORMATS = ("png", "jpeg", "gif", "webp")  # what the API takes as image input
REMOTE_PREFIXES = ("http://", "https://", "data:")  # sent as given, never read here


class NotAnImage(ValueError):
    """The bytes are not a png, jpeg, gif or webp image whose size can be read."""


@dataclass(frozen=True, slots=True)
class Image:
    """One image as it will be sent."""

    media_type: str  # image/png, image/jpeg, image/gif, image/webp
    width: int
    height: int
    sha256: str  # of the file's bytes: the same picture is the same request, whatever its path
    data_url: str


def content_text(content: object) -> str:
    """A message's content as text: a list of parts joined, each image shown as [image]."""
    if not isinstance(content, list):
        return "" if content is None else str(content)
    return " ".join(
        "[image]" if "image" in str(part.get("type")) else str(part.get("text", ""))
        for part in content
        if isinstance(part, dict)
    )


def is_remote(url: str) -> bool:
    """A URL the API fetches (or a data URL already): not a file to read."""
    return url.startswith(REMOTE_PREFIXES)


def read_image(path: Path) -> Image:
    """The image at `path` as a data URL; OSError or NotAnImage say why it cannot be sent."""
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise NotAnImage(
            f"{size / 2**20:.1f} MB is over the {MAX_IMAGE_BYTES // 2**20} MB limit per image"
        )
    data = path.read_bytes()
    kind, width, height = dimensions(data)
    media_type = f"image/{kind}"
    encoded = base64.b64encode(data).decode("ascii")
    return Image(
        media_type,
        width,
        height,
        hashlib.sha256(data).hexdigest(),
        f"data:{media_type};base64,{encoded}",
    )


def decode_data_url(url: str, limit: int | None = None) -> bytes | None:
    """The bytes of a base64 data URL of an image (its first `limit` characters of base64
    at most); None for any other URL."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:image/") or not head.endswith(";base64"):
        return None
    if limit is not None:
        payload = payload[: limit - limit % 4]
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        return None


_HEADER_CHARS = 96 * 1024  # base64 of 72 kB: past any jpeg's metadata to its frame header


def data_url_size(url: str) -> tuple[int, int] | None:
    """(width, height) of a data URL's image, from the start of its data; None when unknown."""
    for limit in (_HEADER_CHARS, None):
        data = decode_data_url(url, limit)
        if data is None:
            return None
        try:
            _, width, height = dimensions(data)
        except NotAnImage:
            if limit is None or len(data) < limit * 3 // 4:
                return None
            continue  # the frame header is further in
        return width, height
    return None


def dimensions(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from an image's header; NotAnImage when it is none of FORMATS."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return _sized("png", width, height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return _sized("gif", width, height)
    if data.startswith(b"\xff\xd8"):
        return _sized("jpeg", *_jpeg_size(data))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _sized("webp", *_webp_size(data))
    raise NotAnImage("not a png, jpeg, gif or webp image")


def _sized(kind: str, width: int, height: int) -> tuple[str, int, int]:
    if width <= 0 or height <= 0:
        raise NotAnImage(f"a {kind} image of {width}×{height} pixels")
    return kind, width, height


_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the JPEG's segments to its start-of-frame, which holds the size."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise NotAnImage("a damaged jpeg image (no segment where one should start)")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # segments without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _JPEG_FRAMES and at + 9 <= len(data):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        at += 2 + length
    raise NotAnImage("a jpeg image whose size cannot be read (no frame header)")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise NotAnImage("a webp image whose size cannot be read")
