"""One signature, one request: a signature is bound to the method that first used it, and a
signed change is accepted once, on every replica (the record is shared: see SignatureLedger).

Convert's string to sign covers neither the method nor a nonce, so without this a captured
signed request could be sent again, or as another method, until its Expires."""

from __future__ import annotations

from typing import Protocol

from apikeys.errors import Unauthenticated

# A retry of a read changes nothing, so these may repeat with the same signature.
REPEATABLE_METHODS = frozenset({"GET", "HEAD"})
# Method names are HTTP tokens; the ledger keeps at most this many characters of one.
MAX_METHOD_LENGTH = 16
MEMO_MAX_SIGNATURES = 10_000
# The reason a refusal gives (apikeys.errors.Unauthenticated), for the metrics.
REPLAYED = "replayed"


class SignatureLedger(Protocol):
    """The shared record of used signatures (the database, or Redis)."""

    async def claim(self, signature: str, method: str, forget_at: int) -> tuple[str, bool]:
        """Bind `signature` to `method` unless it is bound already, to be remembered until
        `forget_at` (UNIX seconds). Returns the method it is bound to, and whether this call
        bound it."""
        ...


class ReplayGuard:
    """Applies the rule to a verified signature, asking the shared ledger once per signature
    and process.

    What the ledger answered is kept in a bounded memo: a binding never changes while it
    is remembered, and outlives the signature's own validity, so an answer from the memo is
    the answer the ledger would give. A repeated read then costs a dictionary lookup."""

    def __init__(self, ledger: SignatureLedger, *, clock_skew: int) -> None:
        self._ledger = ledger
        self._skew = clock_skew
        self._bound_methods: dict[str, str] = {}

    async def admit(self, signature: str, method: str, expires: int) -> None:
        """Allow this use of a verified signature, or raise Unauthenticated."""
        signature = signature.lower()
        bound = self._bound_methods.get(signature)
        if bound is None:
            if len(method) > MAX_METHOD_LENGTH or not method.isascii() or not method.isalpha():
                raise Unauthenticated("A signed request needs a plain HTTP method", "malformed")
            bound, first = await self._ledger.claim(signature, method, expires + self._skew)
            self._remember(signature, bound)
            if first:
                return
        if bound != method:
            raise Unauthenticated(
                f"This signature was first used by a {bound} request and is valid for that "
                "method only; sign each request anew",
                REPLAYED,
            )
        if method not in REPEATABLE_METHODS:
            raise Unauthenticated(
                f"This signature was already used: a signed {method} is accepted once; "
                "sign the request again (with a new Expires) to repeat it",
                REPLAYED,
            )

    def _remember(self, signature: str, method: str) -> None:
        if len(self._bound_methods) >= MEMO_MAX_SIGNATURES:
            del self._bound_methods[next(iter(self._bound_methods))]
        self._bound_methods[signature] = method
