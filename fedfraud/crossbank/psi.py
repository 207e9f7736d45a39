"""Private alert matching between two banks with OpenMined PSI (ECDH-based, Bloom/GCS setup).

Bank A learns which of its alerted accounts bank B alerted too, and nothing else about B's list;
B learns only the size of A's list. Items are keyed hashes of account ids (key shared by the banks,
not the operator), so an operator relaying the messages cannot run PSI itself with guessed ids:
without the key its guesses never match. Every message is bytes, so it can be relayed (and
signed with roster keys) like any other payload.

One matching takes three messages: A -> B `request`, B -> A `setup` + `response`, then A finishes
alone with its client key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fedfraud.errors import ConfigError, PayloadError

FALSE_POSITIVE_RATE = 1e-9  # per query of the whole list: a spurious match is practically ruled out
_TOKEN_DOMAIN = b"fedfraud-alerts"


def _psi():
    # openmined-psi pins protobuf==6.30.2, which Flower's grpcio stack refuses; it is installed
    # --no-deps and runs on the protobuf Flower needs (Makefile). Imported only when used.
    import private_set_intersection.python as psi

    return psi


def alert_tokens(accounts: Iterable[str], key: bytes) -> list[str]:
    """The PSI items for `accounts`: keyed BLAKE2b hex digests, in the same order."""
    if len(key) < 16:
        raise ConfigError("alert matching key must be at least 16 bytes")
    return [
        hashlib.blake2b(
            str(a).encode(), key=key[:64], digest_size=16, person=_TOKEN_DOMAIN
        ).hexdigest()
        for a in accounts
    ]


@dataclass(frozen=True)
class PendingMatch:
    """A's state between sending its request and finishing: its PSI client key and items."""

    client_key: bytes
    items: tuple[str, ...]


def start(items: Sequence[str]) -> tuple[PendingMatch, bytes]:
    """A: a fresh client key and the blinded request to send to B."""
    psi = _psi()
    client = psi.client.CreateWithNewKey(True)
    request = client.CreateRequest(list(items)).SerializeToString()
    return PendingMatch(bytes(client.GetPrivateKeyBytes()), tuple(items)), request


def answer(items: Sequence[str], request: bytes) -> tuple[bytes, bytes]:
    """B: (setup, response) for A's `request` over B's own `items` (fresh key per answer)."""
    psi = _psi()
    server = psi.server.CreateWithNewKey(True)
    try:
        parsed = psi.Request()
        parsed.ParseFromString(bytes(request))
        response = server.ProcessRequest(parsed)
    except Exception as exc:  # the C++ binding raises plain RuntimeError on bad input
        raise PayloadError(f"malformed alert-matching request: {exc}") from exc
    n_client = len(parsed.encrypted_elements)
    setup = server.CreateSetupMessage(FALSE_POSITIVE_RATE, max(1, n_client), list(items))
    return setup.SerializeToString(), response.SerializeToString()


def finish(pending: PendingMatch, setup: bytes, response: bytes) -> list[int]:
    """A: indices into its own items that B also holds."""
    psi = _psi()
    client = psi.client.CreateFromKey(pending.client_key, True)
    try:
        parsed_setup, parsed_response = psi.ServerSetup(), psi.Response()
        parsed_setup.ParseFromString(bytes(setup))
        parsed_response.ParseFromString(bytes(response))
        found = client.GetIntersection(parsed_setup, parsed_response)
    except Exception as exc:
        raise PayloadError(f"malformed alert-matching answer: {exc}") from exc
    return sorted(int(i) for i in found)
