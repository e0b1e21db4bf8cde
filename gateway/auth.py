"""Bearer tokens: HS256-signed JWTs naming the user (``sub``), with ``iat`` and ``exp``.

Only HS256 is accepted (``alg: none`` and every other algorithm are refused), ``exp``, ``iat``
and ``sub`` are required, the issuer must be ``tokenlog``. Tokens are never logged: errors
say what was wrong with a token, never the token.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import jwt

from gateway.errors import InvalidRequest, Unauthorized

ALGORITHM = "HS256"
ISSUER = "tokenlog"
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")
MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request comes from."""

    user_id: str
    expires_at: int
    """Seconds since the epoch."""


def check_user_id(user_id: object) -> str:
    if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
        raise InvalidRequest(f"user_id must match {USER_ID.pattern}")
    return user_id


@dataclass(frozen=True, slots=True)
class TokenService:
    secret: str
    ttl_s: int = 3600

    def issue(self, user_id: str, *, ttl_s: int | None = None, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        claims = {
            "sub": check_user_id(user_id),
            "iss": ISSUER,
            "iat": issued,
            "exp": issued + (self.ttl_s if ttl_s is None else ttl_s),
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify(self, token: str | None) -> Identity:
        if not token:
            raise Unauthorized("a bearer token is required (Authorization header or access_token)")
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("token too long")
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired", reason="expired") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token ({type(exc).__name__})", reason="invalid") from exc
        user = claims.get("sub")
        if not isinstance(user, str) or not USER_ID.fullmatch(user):
            raise Unauthorized("token names no valid user", reason="invalid")
        return Identity(user, int(claims["exp"]))


def bearer(authorization: str | None, access_token: str | None) -> str | None:
    """The token of a request: ``Authorization: Bearer ...`` first, else ``access_token``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Authorization must be 'Bearer <token>'")
        return value.strip()
    return access_token or None
