"""Registration, login, refresh-token rotation, logout, and resolving an access token to a user."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from starlette.requests import HTTPConnection

from kintsugi_rt import errors
from kintsugi_rt.auth import storage
from kintsugi_rt.auth.messages import LoginRequest, RegisterRequest, TokenPair, User
from kintsugi_rt.auth.passwords import Passwords
from kintsugi_rt.auth.tokens import (
    AccessTokens,
    TokenExpired,
    TokenInvalid,
    hash_refresh_token,
    new_refresh_token,
)
from kintsugi_rt.auth.validation import check_registration, loose_email, normalize_email
from kintsugi_rt.context import AppContext
from kintsugi_rt.errors import ApiError
from kintsugi_rt.logs import get_logger
from kintsugi_rt.socket.protocol import CLOSE_UNAUTHORIZED
from kintsugi_rt.web import bearer_token

log = get_logger(__name__)

EMAIL_TAKEN = "email_taken"
INVALID_CREDENTIALS = "invalid_credentials"
INVALID_REFRESH_TOKEN = "invalid_refresh_token"
REFRESH_TOKEN_EXPIRED = "refresh_token_expired"
REFRESH_TOKEN_REUSED = "refresh_token_reused"
INVALID_TOKEN = errors.INVALID_TOKEN
SESSION_REVOKED = errors.SESSION_REVOKED


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str | None
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user and the login session their access token belongs to."""

    user: User
    session_id: uuid.UUID
    expires_at: datetime

    @property
    def user_id(self) -> uuid.UUID:
        return self.user.id


_REFRESH_REFUSALS = {
    INVALID_REFRESH_TOKEN: "Refresh token is not valid; log in again.",
    REFRESH_TOKEN_REUSED: "Refresh token was already used; every token of this login is revoked.",
    REFRESH_TOKEN_EXPIRED: "Refresh token has expired; log in again.",
}


def _refresh_refusal(state: storage.RefreshTokenState | None, now: datetime) -> str | None:
    """Why this refresh token may not be rotated (an error code), or ``None`` if it may.

    A used token is reuse even when its login has ended since: that is what the loser of a race of
    three or more refreshes sees after the second one revoked the family.
    """
    if state is None:
        return INVALID_REFRESH_TOKEN
    if state.used_at is not None:
        return REFRESH_TOKEN_REUSED
    if state.session_revoked:
        return INVALID_REFRESH_TOKEN
    if state.expires_at <= now:
        return REFRESH_TOKEN_EXPIRED
    return None


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="kintsugi"'})


class AuthService:
    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx
        self.passwords = Passwords(ctx.settings)
        self.access_tokens = AccessTokens(ctx.settings.jwt_secret, ctx.settings.jwt_access_expiry)

    async def register(self, body: RegisterRequest, client: ClientInfo) -> TokenPair:
        email, display_name, problems = check_registration(body)
        await self._check_rate(client, email)
        if problems:
            raise ApiError(422, errors.VALIDATION_FAILED, "Some fields are not valid.", fields=problems)
        password_hash = await self.passwords.hash(body.password)
        async with self._ctx.db.pool.acquire() as conn, conn.transaction():
            try:
                user = await storage.create_user(conn, email, display_name, password_hash)
            except storage.EmailTaken:
                raise ApiError(
                    409,
                    EMAIL_TAKEN,
                    "An account with this email exists.",
                    fields={"email": "Already registered."},
                ) from None
            pair = await self._start_session(conn, user, client)
        log.info("auth.registered", user_id=str(user.id))
        return pair

    async def login(self, body: LoginRequest, client: ClientInfo) -> TokenPair:
        email = normalize_email(body.email)
        await self._check_rate(client, email or loose_email(body.email))
        # No account has an invalid address: it is simply not found (401 like any unknown one, not 422).
        found = await storage.find_credentials(self._ctx.db.pool, email) if email else None
        # Verify even for an unknown email (against a decoy) so both failures take the same time.
        ok = await self.passwords.verify(found[1] if found else None, body.password)
        if found is None or not ok:
            log.info("auth.login_failed", known_email=found is not None)
            raise _unauthorized(INVALID_CREDENTIALS, "Email or password is wrong.")
        user, stored_hash = found
        # Hashed before taking a connection: waiting for a hashing slot must not hold one.
        new_hash = None
        if self.passwords.needs_rehash(stored_hash):
            new_hash = await self.passwords.hash(body.password)
        async with self._ctx.db.pool.acquire() as conn, conn.transaction():
            if new_hash is not None:
                await storage.update_password_hash(conn, user.id, new_hash)
                log.info("auth.password_rehashed", user_id=str(user.id))
            pair = await self._start_session(conn, user, client)
        log.info("auth.logged_in", user_id=str(user.id))
        return pair

    async def refresh(self, refresh_token: str) -> TokenPair:
        now = self._ctx.clock.now()
        token_hash = hash_refresh_token(refresh_token)
        revoked = False
        async with self._ctx.db.pool.acquire() as conn, conn.transaction():
            # Racing refreshes of one token queue on this lock; every one after the first sees it used.
            state = await storage.lock_refresh_token(conn, token_hash)
            refusal = _refresh_refusal(state, now)
            if state is not None and refusal is None:
                await storage.mark_refresh_token_used(conn, token_hash, state.session_id, now)
                user = await storage.get_user(conn, state.user_id)
                assert user is not None  # the session row holds a foreign key to it
                return await self._issue_pair(conn, user, state.session_id)
            if state is not None and refusal == REFRESH_TOKEN_REUSED:
                # A rotated token came back: it leaked. End the whole family, thief and owner alike.
                revoked = await storage.revoke_session(conn, state.session_id, now, "refresh_token_reused")
                log.warning("auth.refresh_token_reused", session_id=str(state.session_id))
        if state is not None and revoked:  # its sockets go too, on every node, once that committed
            await self._ctx.events.close_sockets(
                state.user_id, CLOSE_UNAUTHORIZED, SESSION_REVOKED, session_id=state.session_id
            )
        assert refusal is not None
        raise _unauthorized(refusal, _REFRESH_REFUSALS[refusal])

    async def logout(self, principal: Principal) -> None:
        await storage.revoke_session(self._ctx.db.pool, principal.session_id, self._ctx.clock.now(), "logout")
        await self._ctx.events.close_sockets(
            principal.user.id, CLOSE_UNAUTHORIZED, SESSION_REVOKED, session_id=principal.session_id
        )
        log.info("auth.logged_out", user_id=str(principal.user.id), session_id=str(principal.session_id))

    async def logout_all(self, principal: Principal) -> int:
        count = await storage.revoke_user_sessions(
            self._ctx.db.pool, principal.user.id, self._ctx.clock.now()
        )
        await self._ctx.events.close_sockets(principal.user.id, CLOSE_UNAUTHORIZED, SESSION_REVOKED)
        log.info("auth.logged_out_everywhere", user_id=str(principal.user.id), sessions=count)
        return count

    async def require_principal(self, conn: HTTPConnection) -> Principal:
        """The caller behind ``Authorization: Bearer``; 401 otherwise. For any module's REST routes."""
        token = bearer_token(conn)
        if token is None:
            raise ApiError(
                401,
                errors.UNAUTHORIZED,
                "Send an access token as 'Authorization: Bearer <token>'.",
                headers={"WWW-Authenticate": 'Bearer realm="kintsugi"'},
            )
        return await self.authenticate(token)

    async def authenticate(self, access_token: str) -> Principal:
        """Resolve a bearer token to a live session, or raise a 401 ``ApiError``."""
        try:
            claims = self.access_tokens.verify(access_token, self._ctx.clock.now())
        except TokenExpired:
            raise _unauthorized(errors.TOKEN_EXPIRED, "Access token has expired; refresh it.") from None
        except TokenInvalid:
            raise _unauthorized(INVALID_TOKEN, "Access token is not valid.") from None
        user = await storage.active_session_user(self._ctx.db.pool, claims.session_id, claims.user_id)
        if user is None:
            raise _unauthorized(SESSION_REVOKED, "This login has ended; log in again.")
        return Principal(user=user, session_id=claims.session_id, expires_at=claims.expires_at)

    async def _check_rate(self, client: ClientInfo, email: str) -> None:
        """Count an attempt against the per-IP, per-(email, IP) and per-email limits, in that order.

        The first limit that refuses stops the count, so attempts refused by a tighter limit do not
        use up the looser one behind it: one IP hammering an address cannot exhaust that address's
        global cap and lock its owner out everywhere.
        """
        settings = self._ctx.settings
        limiter = self._ctx.rate_limiter
        ip = client.ip or "unknown"
        checks = (
            ("auth:ip", ip, settings.auth_rate_limit_ip),
            ("auth:email_ip", f"{ip} {email}", settings.auth_rate_limit_email_ip),
            ("auth:email", email, settings.auth_rate_limit_email),
        )
        for scope, key, rule in checks:
            wait = await limiter.hit(scope, key, rule)
            if wait is not None:
                seconds = max(1, math.ceil(wait))
                log.info("auth.rate_limited", ip=client.ip, limit=scope, retry_after=seconds)
                raise ApiError(
                    429,
                    errors.RATE_LIMITED,
                    f"Too many attempts; try again in {seconds} s.",
                    headers={"Retry-After": str(seconds)},
                )

    async def _start_session(self, conn: asyncpg.Connection, user: User, client: ClientInfo) -> TokenPair:
        session_id = await storage.create_session(
            conn, user.id, self._ctx.clock.now(), client.user_agent, client.ip
        )
        return await self._issue_pair(conn, user, session_id)

    async def _issue_pair(self, conn: asyncpg.Connection, user: User, session_id: uuid.UUID) -> TokenPair:
        settings = self._ctx.settings
        now = self._ctx.clock.now()
        refresh_token, refresh_hash = new_refresh_token()
        await storage.insert_refresh_token(
            conn, session_id, refresh_hash, now, now + settings.jwt_refresh_expiry
        )
        return TokenPair(
            user=user,
            access_token=self.access_tokens.issue(user.id, session_id, now),
            refresh_token=refresh_token,
            expires_in=int(settings.jwt_access_expiry.total_seconds()),
            refresh_expires_in=int(settings.jwt_refresh_expiry.total_seconds()),
        )
