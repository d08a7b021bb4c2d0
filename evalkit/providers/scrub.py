"""What every string from a model server goes through before evalkit keeps or shows it.

A provider scrubs the whole answer or error it returns, once, at its exit: a key or an emoji
split across stream chunks is seen joined there.

- Lone surrogates (a server's token cut an emoji in two) are joined with their other half,
  or replaced by U+FFFD: the text must be valid Unicode for the journal, Parquet and HTML.
- The API key becomes `[redacted]`: as configured, stripped of surrounding whitespace (what
  a server saw), and JSON-escaped (inside a text that is itself JSON, such as tool-call
  arguments). Strings are redacted after decoding, whatever escapes the server used. A key
  shorter than `MIN_SECRET_CHARS` is a placeholder (`x`, `EMPTY`) for a server that wants
  none: redacting it would rewrite answers.
- An error message is also un-escaped (a body that failed to parse may still spell the key
  in JSON escapes), cut to `MAX_MESSAGE_CHARS` after redaction, and rid of control
  characters, which would otherwise reach the terminal raw.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from evalkit.providers import Completion, ProviderError

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 8
MAX_MESSAGE_CHARS = 500
MAX_DEPTH = 32  # of a JSON value kept from an answer (logprobs): real ones nest 5 deep

# C0, DEL, C1, and the bidirectional and line-separator controls that can disguise a line
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]+")
_ESCAPE = re.compile(r'\\(?:u([0-9a-fA-F]{4})|(["\\/bfnrt]))')
_ESCAPED = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def valid_unicode(text: str) -> str:
    """`text` with surrogate pairs joined into their character and lone ones as U+FFFD."""
    if text.isascii():  # the common case, and a constant-time test
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class Scrubber:
    """Scrubs the strings of one provider's answers and errors (see the module docstring)."""

    def __init__(self, api_key: str | None, secrets: Sequence[str] = ()) -> None:
        forms: set[str] = set()
        given = [s for s in (api_key, *secrets) if s]
        for key in {form for s in given for form in (s, s.strip())}:
            if len(key.strip()) >= MIN_SECRET_CHARS:
                forms |= {key, json.dumps(key)[1:-1], json.dumps(key, ensure_ascii=False)[1:-1]}
        self._secrets = sorted(forms, key=len, reverse=True)  # a longer form first

    def completion(self, completion: Completion) -> Completion:
        """Every text field of `completion`, in place; a too-deep value is a bad response."""
        for choice in completion.choices:
            choice.text = self.text(choice.text)
            choice.finish_reason = self.optional(choice.finish_reason)
            choice.logprobs = self.value(choice.logprobs)
            if choice.tool_calls is not None:
                choice.tool_calls = [
                    {
                        k: self.json_text(v) if k == "arguments" else self.text(v)
                        for k, v in c.items()
                    }
                    for c in choice.tool_calls
                ]
        completion.system_fingerprint = self.optional(completion.system_fingerprint)
        completion.extra = self.value(completion.extra)
        return completion

    def error(self, error: ProviderError) -> ProviderError:
        """`error` with its message scrubbed."""
        return ProviderError(
            error.error_type,
            self.message(error.message),
            retryable=error.retryable,
            status=error.status,
            retry_after=error.retry_after,
        )

    def text(self, text: str) -> str:
        """Valid Unicode, without the key."""
        text = valid_unicode(text)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def optional(self, text: str | None) -> str | None:
        return None if text is None else self.text(text)

    def json_text(self, text: str) -> str:
        """A text that is JSON, scrubbed in its decoded strings too (re-encoded if they changed)."""
        text = self.text(text)
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return text
        clean = self.value(value)
        return text if clean == value else json.dumps(clean, ensure_ascii=False)

    def value(self, value: Any, depth: int = 0) -> Any:
        """A decoded JSON value with every string scrubbed, names included."""
        if depth > MAX_DEPTH:
            raise ProviderError("bad_response", f"the answer nests more than {MAX_DEPTH} deep")
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(item, depth + 1) for item in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v, depth + 1) for k, v in value.items()}
        return value

    def message(self, text: str) -> str:
        """Server text in an error: un-escaped, redacted, one short line of printable text.

        Only the start is read: un-escaping shrinks a text at most six-fold, so the cut after
        redaction is the one that counts and cannot leave part of a key behind.
        """
        text = self.text(_unescape(text[: 16 * MAX_MESSAGE_CHARS]))[:MAX_MESSAGE_CHARS]
        return self.text(_CONTROLS.sub(" ", text)).strip()


def _unescape(text: str) -> str:
    """JSON string escapes decoded, leniently: in a text that is not (or no longer) JSON."""
    return _ESCAPE.sub(lambda m: chr(int(m[1], 16)) if m[1] else _ESCAPED[m[2]], text)
