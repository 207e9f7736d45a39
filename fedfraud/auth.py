"""Bearer-token checks for `fedfraud serve`: the bank's API gateway issues OAuth2/JWT access
tokens, the scoring service verifies them (PyJWT) before any transaction is scored.

A token is accepted when its signature verifies under one of the configured public keys (a JWKS
file as an identity provider publishes it, or one PEM public key), it names the configured
issuer and audience, it has not expired, and its `scope` (OAuth2, space-separated) or `scp`
claim holds the scoring scope. Only asymmetric algorithms are accepted: with a shared-secret
algorithm (HS256) anyone holding the verifying key could also mint tokens, and accepting one
where a public key is configured is the classic algorithm-confusion attack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from fedfraud.errors import ConfigError

DEFAULT_SCOPE = "fraud:score"
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
LEEWAY_S = 30.0  # clock skew tolerated between the gateway and this host


class TokenRejected(Exception):
    """A request's token is missing or not acceptable: HTTP `status` (401 or 403)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


@dataclass(frozen=True)
class TokenVerifier:
    """Verifies access tokens for one audience and issuer, under keys of one source."""

    issuer: str
    audience: str
    scope: str = DEFAULT_SCOPE
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> public key ("" = any kid)
    source: str = ""

    @classmethod
    def from_files(
        cls,
        *,
        issuer: str | None,
        audience: str | None,
        scope: str = DEFAULT_SCOPE,
        jwks: Path | None = None,
        public_key: Path | None = None,
    ) -> TokenVerifier:
        """Build from the `serve` options; ConfigError naming the missing or bad one."""
        if (jwks is None) == (public_key is None):
            raise ConfigError(
                "serve needs the token keys: --auth-jwks FILE or --auth-public-key PEM (one of "
                "them), with --auth-issuer and --auth-audience; or --no-auth for a local trial"
            )
        if not issuer or not audience:
            raise ConfigError(
                "serve needs --auth-issuer and --auth-audience (the gateway's token issuer and "
                "this service's audience), or --no-auth for a local trial"
            )
        if not scope.strip() or " " in scope.strip():
            raise ConfigError(f"--auth-scope must be one scope name, got {scope!r}")
        keys = _read_jwks(jwks) if jwks is not None else {"": _read_pem(public_key)}
        source = str(jwks if jwks is not None else public_key)
        return cls(issuer, audience, scope.strip(), keys, source)

    def describe(self) -> str:
        """One line for the startup message."""
        return (
            f"bearer JWT required (issuer {self.issuer}, audience {self.audience}, scope "
            f"{self.scope}; keys from {self.source})"
        )

    def verify(self, authorization: str | None) -> dict[str, Any]:
        """The token's claims, or TokenRejected (401: no/invalid token, 403: lacks the scope)."""
        if not authorization:
            raise TokenRejected(401, "invalid_request", "missing bearer token")
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise TokenRejected(401, "invalid_request", "use 'Authorization: Bearer <token>'")
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected(401, "invalid_token", f"malformed token ({exc})") from None
        if header.get("alg") not in ALGORITHMS:
            raise TokenRejected(
                401, "invalid_token", f"token algorithm {header.get('alg')!r} is not accepted"
            )
        key = self.keys.get(str(header.get("kid") or "")) or self.keys.get("")
        if key is None:
            raise TokenRejected(401, "invalid_token", "token signed with an unknown key (kid)")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected(401, "invalid_token", "token expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected(401, "invalid_token", "token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected(401, "invalid_token", "token from another issuer") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(401, "invalid_token", f"token rejected ({exc})") from None
        if self.scope not in _scopes(claims):
            raise TokenRejected(403, "insufficient_scope", f"token lacks scope {self.scope}")
        return claims


def _scopes(claims: dict[str, Any]) -> set[str]:
    """OAuth2 `scope` (space-separated string) or `scp` (string or list), as gateways send."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(str(v) for v in value)
    return found


def _read_jwks(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
        jwks = jwt.PyJWKSet.from_dict(doc)
    except FileNotFoundError:
        raise ConfigError(f"--auth-jwks {path} not found; give the gateway's JWKS file") from None
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise ConfigError(
            f"--auth-jwks {path} is not a JWKS document ({exc}); give the gateway's "
            '{"keys": [...]} file'
        ) from None
    keys: dict[str, Any] = {}
    for jwk in jwks.keys:
        if jwk.key_type == "oct":  # a shared secret could mint tokens: never a verifying key
            raise ConfigError(f"--auth-jwks {path} holds a symmetric (oct) key; use public keys")
        keys[str(jwk.key_id or "")] = jwk.key
    return keys


def _read_pem(path: Path | None) -> Any:
    try:
        return serialization.load_pem_public_key(Path(path).read_bytes())  # type: ignore[arg-type]
    except FileNotFoundError:
        raise ConfigError(f"--auth-public-key {path} not found; give a PEM public key") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"--auth-public-key {path} is not a PEM public key ({exc.__class__.__name__}); "
            "give the gateway's signing public key (-----BEGIN PUBLIC KEY-----)"
        ) from None
