"""A loopback-only fake OpenAI server for evalkit's tests and benchmarks (not shipped)."""

from fake_openai.answers import ECHO_MAX_CHARS
from fake_openai.faults import FAULT_NAMES, Fault
from fake_openai.server import FakeOpenAI, RequestRecord

__all__ = ["ECHO_MAX_CHARS", "FAULT_NAMES", "FakeOpenAI", "Fault", "RequestRecord"]
