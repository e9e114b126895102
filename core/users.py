"""Accounts and roles: who may do what to the catalog.

`require(con, user, permission)` is the check every core write makes first; `add_user`,
`verify`, `change_password`, `set_role` and `disable_user` manage the accounts; `sign_in` is
`verify` behind a per-name limit on failed attempts (`SignInThrottle`). A catalog with no
accounts is in single-user mode: every write is allowed, under whatever name it carries.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import bcrypt

from core import catalog

ROLES = ("viewer", "annotator", "lead", "admin")  # each role may do what the ones before it may

# permission -> the least role that has it
PERMISSIONS = {
    "read": "viewer",
    "annotate": "annotator",   # edit labels: save, undo, revert on the Fix page
    "review": "lead",          # reviews, duplicate resolutions and marks, review queues
    "train": "lead",           # train, apply and roll back micro-models
    "snapshot": "lead",
    "ingest": "lead",
    "audit": "lead",           # the audit log: who changed what and when
    "sql": "lead",             # the read-only SQL console
    "admin": "admin",          # accounts
}

FIRST_ADMIN = "admin"
MIN_PASSWORD = 8
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further: a longer password is refused, not cut
BCRYPT_ROUNDS = 12  # log2 of the hashing work: about 0.2 s per hash on one core
_DUMMY_HASH = bcrypt.hashpw(b"no such account", bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


class PermissionDenied(catalog.CatalogError):
    """The acting user may not do this; the message names the role needed."""


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    active: bool
    must_change_password: bool
    created_at: datetime


def has_accounts(con) -> bool:
    """False: single-user mode (no account exists, every write is allowed)."""
    return catalog.count_users(con) > 0


def role_allows(role: str, permission: str) -> bool:
    """Whether `role` has `permission`."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r} (known: {', '.join(PERMISSIONS)})")
    return ROLES.index(role) >= ROLES.index(PERMISSIONS[permission])


def require(con, user: str | None, permission: str) -> None:
    """Raise PermissionDenied unless `user` may do `permission`; in single-user mode, return."""
    needed = PERMISSIONS.get(permission)
    if needed is None:
        raise ValueError(f"unknown permission {permission!r} (known: {', '.join(PERMISSIONS)})")
    if not has_accounts(con):
        return
    if not (user or "").strip():
        raise PermissionDenied(f"this catalog has accounts: {permission} needs a signed-in "
                               f"{needed} (on the command line, name yourself with --user)")
    row = catalog.user_row(con, user)
    if row is None:
        raise PermissionDenied(f"no account named {user!r}: {permission} needs the {needed} role")
    if not row["active"]:
        raise PermissionDenied(f"the account {user!r} is disabled")
    if not role_allows(row["role"], permission):
        raise PermissionDenied(f"{user} is a {row['role']}: {permission} needs the {needed} "
                               "role or higher")


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    return role


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 64 or any(ch in name for ch in "\n\r\t"):
        raise ValueError(f"account name {name!r}: give 1 to 64 characters on one line")
    return name


def _hash(password: str) -> str:
    data = password.encode()
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password is too short: at least {MIN_PASSWORD} characters")
    if len(data) > MAX_PASSWORD_BYTES:
        raise ValueError(f"the password is too long: at most {MAX_PASSWORD_BYTES} bytes")
    return bcrypt.hashpw(data, bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


def generate_password() -> str:
    """A random one-time password (16 URL-safe characters, 96 bits)."""
    return secrets.token_urlsafe(12)


def add_user(con, name: str, role: str, *, by: str | None, password: str | None = None) -> str:
    """Create an account; returns its password (a generated one-time password unless given,
    which the user must change at the first sign-in). The first account must be an admin."""
    name, role = _check_name(name), _check_role(role)
    require(con, by, "admin")
    if not has_accounts(con) and role != "admin":
        raise ValueError("the first account must be an admin: it is the one that adds the others")
    if catalog.user_row(con, name) is not None:
        raise ValueError(f"an account named {name!r} already exists")
    one_time = password is None
    password = generate_password() if one_time else password
    catalog.insert_user(con, name, role, _hash(password), must_change_password=one_time)
    catalog.add_user_event(con, name, "add", detail=role, author=by)
    return password


def create_first_admin(con) -> str | None:
    """On a catalog with no accounts, create `admin` with a one-time password and return the
    password; otherwise return None."""
    if has_accounts(con):
        return None
    return add_user(con, FIRST_ADMIN, "admin", by=None)


def list_users(con):
    """Columns: name, role, active, must_change_password, created_at."""
    return catalog.user_table(con)


def get_account(con, name: str) -> Account | None:
    row = catalog.user_row(con, name)
    if row is None:
        return None
    return Account(row["name"], row["role"], bool(row["active"]),
                   bool(row["must_change_password"]), row["created_at"])


def _existing(con, name: str) -> dict:
    row = catalog.user_row(con, name)
    if row is None:
        raise ValueError(f"no account named {name!r}")
    return row


def _keep_an_admin(con, row: dict, *, what: str) -> None:
    if row["role"] == "admin" and row["active"] and catalog.count_active_admins(con) <= 1:
        raise ValueError(f"cannot {what} {row['name']!r}: it is the last active admin")


def set_role(con, name: str, role: str, *, by: str | None) -> None:
    """Give an account another role; the last active admin keeps theirs."""
    role = _check_role(role)
    require(con, by, "admin")
    row = _existing(con, name)
    if role != "admin":
        _keep_an_admin(con, row, what="demote")
    catalog.update_user(con, name, role=role)
    catalog.add_user_event(con, name, "set-role", detail=role, author=by)


def disable_user(con, name: str, *, by: str | None) -> None:
    """Disable an account (its history stays); the last active admin cannot be disabled."""
    require(con, by, "admin")
    row = _existing(con, name)
    _keep_an_admin(con, row, what="disable")
    catalog.update_user(con, name, active=False)
    catalog.add_user_event(con, name, "disable", detail=None, author=by)


def reset_password(con, name: str, *, by: str | None) -> str:
    """Give an account a new one-time password (it must be changed at the next sign-in)."""
    require(con, by, "admin")
    _existing(con, name)
    password = generate_password()
    catalog.update_user(con, name, password_hash=_hash(password), must_change_password=True)
    catalog.add_user_event(con, name, "password", detail="reset to a one-time password", author=by)
    return password


def verify(con, name: str, password: str) -> Account | None:
    """The active account `name` if `password` is its password, else None. An unknown name costs
    a bcrypt check too, so timing does not tell which names exist."""
    row = catalog.user_row(con, (name or "").strip())
    stored = row["password_hash"] if row else _DUMMY_HASH
    data = (password or "").encode()[:MAX_PASSWORD_BYTES]
    matches = bcrypt.checkpw(data, stored.encode())
    if row is None or not matches or not row["active"]:
        return None
    return get_account(con, row["name"])


FREE_SIGN_IN_FAILURES = 5  # failed sign-ins in a row a name may have before it must wait
FIRST_SIGN_IN_WAIT_S = 30.0  # the first wait; doubled with each further failure
MAX_SIGN_IN_WAIT_S = 900.0


class TooManySignIns(PermissionDenied):
    """Too many failed sign-ins for a name; `wait` seconds until the next try is heard."""

    def __init__(self, wait: float):
        super().__init__(f"too many failed sign-ins for this name: try again in {wait:.0f} s")
        self.wait = wait


class SignInThrottle:
    """Failed sign-ins per name (known or not, so that a refusal tells nothing about which
    names exist), kept in this process: the dashboard's, where people sign in. After
    FREE_SIGN_IN_FAILURES failures in a row a name waits FIRST_SIGN_IN_WAIT_S before its next
    try is even checked, twice as long after each further failure, at most MAX_SIGN_IN_WAIT_S;
    a right password clears the count. Guessing a password then takes years, at the price that
    someone who knows a name can keep that person waiting (a lead or admin can see the failed
    attempts in the server log)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # name -> (in a row, when the last)

    def wait(self, name: str) -> float:
        """Seconds until `name` may try again; 0 when it may now."""
        with self._lock:
            count, last = self._failures.get(name, (0, 0.0))
        if count < FREE_SIGN_IN_FAILURES:
            return 0.0
        pause = min(FIRST_SIGN_IN_WAIT_S * 2 ** (count - FREE_SIGN_IN_FAILURES), MAX_SIGN_IN_WAIT_S)
        return max(0.0, last + pause - self._clock())

    def failed(self, name: str) -> None:
        with self._lock:
            count, _ = self._failures.get(name, (0, 0.0))
            self._failures[name] = (count + 1, self._clock())

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)


SIGN_INS = SignInThrottle()


def sign_in(con, name: str, password: str, *,
            throttle: SignInThrottle | None = None) -> Account | None:
    """`verify`, refused with TooManySignIns while `name` must wait after failed attempts
    (`throttle`: this process's SIGN_INS by default)."""
    throttle = throttle or SIGN_INS
    key = (name or "").strip()
    wait = throttle.wait(key)
    if wait > 0:
        raise TooManySignIns(wait)
    account = verify(con, key, password)
    if account is None:
        throttle.failed(key)
    else:
        throttle.succeeded(key)
    return account


def change_password(con, name: str, old: str, new: str) -> None:
    """Replace the user's password after checking the old one; clears must_change_password."""
    if verify(con, name, old) is None:
        raise PermissionDenied("the current password is wrong")
    if new == old:
        raise ValueError("choose a new password, not the one-time one")
    catalog.update_user(con, name, password_hash=_hash(new), must_change_password=False)
    catalog.add_user_event(con, name, "password", detail="changed", author=name)
