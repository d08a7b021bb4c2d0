"""`--max-cost`: a hard ceiling on what a run may spend.

Before a request is dispatched, its maximum cost (counted prompt tokens plus `max_tokens` ×
`n` completion tokens, at the model's prices) is reserved; a request whose reservation would
take spent + reserved past the ceiling is not sent, and the run stops dispatching. When the
answer arrives the reservation is replaced by what it really cost, or kept whole when the
server's usage is unknown (missing, negative or impossible: see catalog.ModelInfo.usage). So
the ceiling holds even with many requests in flight, whatever the server reports, and
nothing already paid for is lost. A resume starts from what the journal says was spent.
"""

from __future__ import annotations

from evalkit.models.tokens import Counter
from evalkit.planning.plan import Request


def max_cost(request: Request, counter: Counter, batch: bool = False) -> float:
    """The most this request can cost (`batch`: sent through the Batch API): its whole
    completion budget used, by every choice."""
    info = request.target.info
    prompt = counter.body(request.body)
    completion = request.max_tokens
    if completion is None:
        completion = max(1, info.context_window - prompt)
    return info.cost(prompt, completion * request.choices, batch=batch)


class BudgetReached(Exception):
    """The next request would take the run past `--max-cost`."""


class Budget:
    """Spent and reserved dollars against an optional ceiling."""

    def __init__(self, limit: float | None, spent: float = 0.0) -> None:
        self.limit = limit
        self.spent = spent  # a resumed run starts from what it already spent
        self.reserved = 0.0
        self.refused = 0  # requests not sent because of the ceiling

    @property
    def exhausted(self) -> bool:
        return self.refused > 0

    def reserve(self, amount: float) -> bool:
        """Hold `amount` for a request about to be sent; False means do not send it."""
        if self.limit is None:
            return True
        if self.spent + self.reserved + amount > self.limit:
            self.refused += 1
            return False
        self.reserved += amount
        return True

    def settle(self, reserved: float, actual: float) -> None:
        self.reserved -= reserved
        self.spent += actual
