"""Operators' bearer tokens for ``allocguard serve`` (``allocguard tokens add/list/revoke``, as the tables' owner).

A token is 32 random bytes (``agt_…``), shown once when it is made; the database keeps its SHA-256 only
(``allocguard.api_tokens``, migration V018), which only the owner may write: allocguard's runtime role can verify a
token, never mint one. Each token names an operator (recorded as who decided) and a role: ``viewer`` reads,
``approver`` also approves and rejects plans."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg

PREFIX = "agt_"


class TokenRole(StrEnum):
    """``allocguard.api_tokens.role``."""

    VIEWER = "viewer"
    APPROVER = "approver"


@dataclass(frozen=True)
class Operator:
    name: str
    role: TokenRole

    @property
    def may_decide(self) -> bool:
        return self.role is TokenRole.APPROVER


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add(owner_dsn: str, name: str, role: TokenRole) -> str:
    """Mint a token for ``name`` (replacing a revoked one of the same name); returns it — the only time it is seen."""
    token = PREFIX + secrets.token_urlsafe(32)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO allocguard.api_tokens (name, token_sha256, role) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET token_sha256 = EXCLUDED.token_sha256, role = EXCLUDED.role,"
            " created_at = now(), revoked_at = NULL WHERE allocguard.api_tokens.revoked_at IS NOT NULL"
            " RETURNING name",
            (name, digest(token), role.value),
        ).fetchone()
    if row is None:
        raise LookupError(f"{name} already has a token: revoke it first")
    return token


def revoke(owner_dsn: str, name: str) -> None:
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        row = conn.execute(
            "UPDATE allocguard.api_tokens SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL RETURNING name",
            (name,),
        ).fetchone()
    if row is None:
        raise LookupError(f"no live token for {name}")


def listed(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, role, created_at, revoked_at FROM allocguard.api_tokens ORDER BY name"
        ).fetchall()
    return [{"name": n, "role": r, "created_at": _iso(c), "revoked_at": _iso(v)} for n, r, c, v in rows]


def verify(conn: psycopg.Connection[Any], token: str) -> Operator | None:
    """The operator a live token names; None for anything else (unknown, revoked, malformed)."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    row = conn.execute(
        "SELECT name, role FROM allocguard.api_tokens WHERE token_sha256 = %s AND revoked_at IS NULL",
        (digest(token),),
    ).fetchone()
    return Operator(str(row[0]), TokenRole(row[1])) if row else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
