"""Images in what a run keeps: a data URL is recorded as the hash of its picture, plus a
thumbnail in the run directory for the report.

Why: an image is sent as a data URL of up to 27 MB; written into every journal line, cache
row and DataFrame cell of every sample and model it would swell them by that much each time.
The request key still covers the whole data URL (it hashes the body as sent), so the cache
tells pictures apart by content; the records only need to say which picture it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from pathlib import Path
from typing import Any

from evalkit.suite.images import decode_data_url

REF_PREFIX = "sha256:"  # a recorded image URL: sha256: and the hex digest of the picture
FOLDER = "images"  # the run directory's thumbnails, <digest>.png
THUMBNAIL_PIXELS = 160  # the longer side of a thumbnail
_MEMO = 256  # data URLs remembered; a case's samples and models share one string


def has_images(wire: str) -> bool:
    """Whether a request body's JSON text carries a data URL of an image."""
    return "data:image/" in wire


def image_urls(prompt: Any) -> list[str]:
    """The image URLs of a recorded prompt's parts, in order (chat or Responses shape)."""
    found = []
    for message in prompt if isinstance(prompt, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            image = part.get("image_url") if isinstance(part, dict) else None
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str):
                found.append(url)
    return found


def thumbnail_path(run_dir: Path, ref: str) -> Path | None:
    """Where the thumbnail of a recorded image URL is, when `ref` is one."""
    if not ref.startswith(REF_PREFIX):
        return None
    digest = ref[len(REF_PREFIX) :]
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        return None
    return run_dir / FOLDER / f"{digest}.png"


class ImageRefs:
    """Replaces data URLs by their picture's hash, writing a thumbnail of each new picture
    into `folder` (when given)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._refs: dict[str, str] = {}

    def messages(self, messages: Any) -> Any:
        """The chat messages with each image part's data URL recorded as its hash."""
        if not isinstance(messages, list) or not any(
            isinstance(m, dict) and isinstance(m.get("content"), list) for m in messages
        ):
            return messages
        return [self._message(m) for m in messages]

    def body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A chat or Responses API body with its pictures recorded as hashes."""
        key = "input" if "input" in body else "messages"
        return {**body, key: self.messages(body.get(key))}

    def _message(self, message: Any) -> Any:
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            return message
        return {**message, "content": [self._part(p) for p in message["content"]]}

    def _part(self, part: Any) -> Any:
        """A chat part (`image_url: {url}`) or a Responses one (`input_image`, `image_url: URL`)."""
        image = part.get("image_url") if isinstance(part, dict) else None
        if isinstance(image, str) and image.startswith("data:"):
            return {**part, "image_url": self._ref(image)}
        if not isinstance(image, dict):
            return part
        url = image.get("url")
        if not isinstance(url, str) or not url.startswith("data:"):
            return part
        return {**part, "image_url": {**image, "url": self._ref(url)}}

    def _ref(self, url: str) -> str:
        ref = self._refs.get(url)
        if ref is not None:
            return ref
        data = decode_data_url(url)
        if data is None:
            return url  # not an image: recorded as sent, which is short or a mistake to see
        digest = hashlib.sha256(data).hexdigest()
        ref = REF_PREFIX + digest
        if self.folder is not None:
            self._thumbnail(data, self.folder / f"{digest}.png")
        if len(self._refs) >= _MEMO:
            self._refs.clear()
        self._refs[url] = ref
        return ref

    def _thumbnail(self, data: bytes, path: Path) -> None:
        """A small PNG of the picture for the report; a picture Pillow cannot read, or a
        folder that cannot be written, only costs the report its thumbnail."""
        if path.exists():
            return
        from PIL import Image, UnidentifiedImageError

        failures = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)
        with contextlib.suppress(*failures), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as picture:
                picture.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
                small = picture.convert("RGBA") if picture.mode not in ("RGB", "RGBA") else picture
                out = io.BytesIO()
                small.save(out, format="PNG")
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(out.getvalue())
            tmp.replace(path)
