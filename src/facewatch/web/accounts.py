"""Users and their credentials, kept in the store's database (tables ``users``, ``credentials``).

Passwords are kept as argon2id hashes, rehashed when the hasher's parameters change. A credential
is a random secret handed out once; only its SHA-256 and a short prefix are kept, so a copy of the
database logs nobody in. Kinds (:class:`~facewatch.web.auth.CredentialKind`):

- ``session``: the browser UI's cookie; each use within ``session_ttl_s`` extends it.
- ``token``: a bearer token from a login; ends ``token_ttl_s`` after it was issued.
- ``api_key``: a bearer secret for programs; lasts until revoked.

Every method is synchronous (SQLAlchemy on ``store.sql``): the web layer calls them on threads.
Errors are :class:`AccountError` subclasses, each carrying its HTTP ``status`` and ``code``::

    AccountError
    ├── InvalidCredentials   401  unknown user, wrong password or disabled user: one message
    ├── InvalidAccountInput  422  a user name, password or role that cannot be used
    ├── UserNotFound         404
    ├── CredentialNotFound   404
    ├── UsernameTaken        409
    ├── LastAdmin            409  the last enabled admin cannot be deleted, disabled or demoted
    ├── SetupDone            409  the first admin exists already
    └── AccountsBusy         503  too many password checks at once
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from facewatch.config import AuthSettings
from facewatch.errors import FacewatchError, StoreError
from facewatch.watchlist.models import Credential, User, WatchlistState, utcnow
from facewatch.watchlist.store import Store, is_unavailable, safe_url
from facewatch.web.auth import CredentialKind, Principal, Role

log = logging.getLogger(__name__)

USERNAME_PATTERN = re.compile(r"[a-z0-9._@-]{1,64}")
#: Longer passwords are refused: argon2 reads all of it, and nobody types more.
MAX_PASSWORD_LENGTH = 1024
#: A secret is its kind's prefix + 43 url-safe characters (256 random bits).
SECRET_PREFIXES = {
    CredentialKind.session: "fws_",
    CredentialKind.token: "fwt_",
    CredentialKind.api_key: "fwk_",
}
#: Longer input cannot be a secret of ours: refused without a look-up.
MAX_SECRET_LENGTH = 128
#: Characters of a secret kept in clear so a user can tell their keys apart.
SHOWN_PREFIX = 12
#: A credential's use is written (last_used_at, a session's new expiry) at most this often.
TOUCH_EVERY_S = 60.0
#: Password hashes computed at once; argon2id takes 64 MiB and a core's worth of time each.
CONCURRENT_HASHES = 2
#: Seconds a password check waits for a free slot before answering "busy" (503).
HASH_WAIT_S = 10.0
#: Revoked or expired credentials are deleted this long after they ended (seconds).
PURGE_AFTER_S = 7 * 86400.0


class AccountError(FacewatchError):
    """Something about users or credentials that cannot be done; ``status`` and ``code`` say
    how the web layer answers it."""

    status = 400
    code = "refused"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidCredentials(AccountError):
    status = 401
    code = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("wrong user name or password")


class InvalidAccountInput(AccountError):
    """``code``: ``invalid_username``, ``weak_password`` (too short or too long),
    ``invalid_role`` or ``invalid_credential``."""

    status = 422

    def __init__(self, message: str, *, code: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.code = code


class UserNotFound(AccountError):
    status = 404
    code = "user_not_found"

    def __init__(self, user: int | str) -> None:
        super().__init__(f"no user {user!r}", user=user)


class CredentialNotFound(AccountError):
    status = 404
    code = "credential_not_found"

    def __init__(self, credential_id: int) -> None:
        super().__init__(f"no credential {credential_id}", credential_id=credential_id)


class UsernameTaken(AccountError):
    status = 409
    code = "username_taken"

    def __init__(self, username: str) -> None:
        super().__init__(f"the user name {username!r} is taken", username=username)


class LastAdmin(AccountError):
    status = 409
    code = "last_admin"

    def __init__(self) -> None:
        super().__init__(
            "this is the last enabled admin: make another user admin first, "
            "it cannot be deleted, disabled or demoted"
        )


class SetupDone(AccountError):
    status = 409
    code = "setup_done"

    def __init__(self) -> None:
        super().__init__("setup is done already: users exist, log in instead")


class AccountsBusy(AccountError):
    status = 503
    code = "busy"

    def __init__(self) -> None:
        super().__init__("too many logins at once; try again in a moment")


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    username: str
    role: Role
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "role": str(self.role),
            "disabled": self.disabled,
            "created_at": self.created_at.isoformat(),
            "last_login_at": _iso(self.last_login_at),
        }


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """A credential as its owner may see it: never the secret, only its first characters."""

    id: int
    user_id: int
    kind: CredentialKind
    name: str | None
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "kind": str(self.kind),
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at.isoformat(),
            "expires_at": _iso(self.expires_at),
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
        }


@dataclass(frozen=True, slots=True)
class Issued:
    """A new credential: its ``secret`` (shown once, never kept) and what is kept of it."""

    secret: str
    credential: CredentialRecord


class Accounts:
    """Users and credentials in the store's database.

    Args:
        store: the open store; its engine holds the ``users`` and ``credentials`` tables.
        settings: lifetimes and the password policy.
        clock: the current UTC time (tests move it).
        hasher: the password hasher; argon2-cffi's defaults (argon2id) when None.
    """

    def __init__(
        self,
        store: Store,
        settings: AuthSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self._clock = clock
        self._hasher = hasher or PasswordHasher()
        self._hashing = threading.BoundedSemaphore(CONCURRENT_HASHES)
        self._sessions = sessionmaker(store.sql, expire_on_commit=False)

    # --- users --------------------------------------------------------------------------------

    def has_users(self) -> bool:
        with self._session() as session:
            return session.scalar(select(User.id).limit(1)) is not None

    def create_user(self, username: str, password: str, role: Role | str) -> UserRecord:
        """A new enabled user.

        Raises:
            InvalidAccountInput: a bad user name, role, or a password too short or too long.
            UsernameTaken: a user of that name exists (names are compared lower-case).
        """
        name = check_username(username)
        wanted = _role(role)
        password_hash = self._hash(self._check_password(password))
        try:
            with self._session() as session, session.begin():
                user = User(
                    username=name,
                    password_hash=password_hash,
                    role=str(wanted),
                    disabled=False,
                    created_at=self._clock(),
                )
                session.add(user)
                session.flush()
                record = _user(user)
        except IntegrityError:
            raise UsernameTaken(name) from None
        log.info("user %s (%s) created", record.username, record.role)
        return record

    def create_first_admin(self, username: str, password: str) -> UserRecord:
        """The first user, an admin; only while there is no user at all.

        Raises:
            SetupDone: a user exists already.
        """
        name = check_username(username)
        # Checked before the costly hash too, so a public setup route cannot be made to hash.
        if self.has_users():
            raise SetupDone()
        password_hash = self._hash(self._check_password(password))
        with self._session() as session, session.begin():
            _serialize(session)
            if session.scalar(select(User.id).limit(1)) is not None:
                raise SetupDone()
            now = self._clock()
            # Setup logs the new admin in at once.
            user = User(
                username=name,
                password_hash=password_hash,
                role=str(Role.admin),
                disabled=False,
                created_at=now,
                last_login_at=now,
            )
            session.add(user)
            session.flush()
            record = _user(user)
        log.info("first admin %s created", record.username)
        return record

    def get_user(self, user_id: int) -> UserRecord:
        with self._session() as session:
            user = session.get(User, user_id)
            if user is None:
                raise UserNotFound(user_id)
            return _user(user)

    def find_user(self, username: str) -> UserRecord:
        """The user of that name (compared lower-case)."""
        with self._session() as session:
            user = session.scalar(select(User).where(User.username == username.strip().lower()))
            if user is None:
                raise UserNotFound(username)
            return _user(user)

    def list_users(self) -> list[UserRecord]:
        with self._session() as session:
            return [_user(user) for user in session.scalars(select(User).order_by(User.id))]

    def update_user(
        self,
        user_id: int,
        *,
        role: Role | str | None = None,
        disabled: bool | None = None,
        password: str | None = None,
    ) -> UserRecord:
        """Change a user's role, enable or disable them, or set a new password.

        Disabling a user ends all their credentials; a new password ends their sessions and
        tokens (API keys stay).

        Raises:
            UserNotFound: no such user.
            LastAdmin: the change would leave no enabled admin.
            InvalidAccountInput: a bad role or password.
        """
        wanted = None if role is None else _role(role)
        password_hash = None if password is None else self._hash(self._check_password(password))
        now = self._clock()
        may_lose_admin = (wanted is not None and wanted != Role.admin) or disabled is True
        with self._session() as session, session.begin():
            admins = self._lock_admins(session) if may_lose_admin else []
            user = session.get(User, user_id, with_for_update=True)
            if user is None:
                raise UserNotFound(user_id)
            if may_lose_admin and user.id in admins and len(admins) == 1:
                raise LastAdmin()
            if wanted is not None:
                user.role = str(wanted)
            if disabled is not None:
                user.disabled = disabled
            if disabled:
                _revoke_where(session, now, Credential.user_id == user_id)
            if password_hash is not None:
                user.password_hash = password_hash
                _revoke_where(
                    session,
                    now,
                    Credential.user_id == user_id,
                    Credential.kind != CredentialKind.api_key,
                )
            session.flush()
            record = _user(user)
        log.info(
            "user %s updated: role %s, disabled %s, new password %s",
            record.username,
            wanted,
            disabled,
            password_hash is not None,
        )
        return record

    def delete_user(self, user_id: int) -> None:
        """Delete a user and, at once, every credential of theirs.

        Raises:
            UserNotFound: no such user.
            LastAdmin: they are the last enabled admin.
        """
        with self._session() as session, session.begin():
            admins = self._lock_admins(session)
            user = session.get(User, user_id, with_for_update=True)
            if user is None:
                raise UserNotFound(user_id)
            if user.id in admins and len(admins) == 1:
                raise LastAdmin()
            # Explicit: the ON DELETE CASCADE is there too, but not every SQLite connection
            # turns foreign keys on.
            session.execute(delete(Credential).where(Credential.user_id == user_id))
            session.execute(delete(User).where(User.id == user_id))
        log.info("user %d deleted", user_id)

    @staticmethod
    def _lock_admins(session: Session) -> list[int]:
        """The enabled admins' ids, read after every other change that may remove an admin
        has committed: two admins demoting each other at once are taken in turn."""
        _serialize(session)
        return list(
            session.scalars(
                select(User.id)
                .where(User.role == str(Role.admin), User.disabled.is_(False))
                .order_by(User.id)
                .with_for_update()
            )
        )

    # --- passwords ----------------------------------------------------------------------------

    def authenticate(self, username: str, password: str) -> UserRecord:
        """The user with that name and password, with ``last_login_at`` now.

        Unknown user, wrong password and disabled user raise the same error after the same
        work (an unknown name is checked against a dummy hash), so neither the answer nor its
        timing tells which names exist.

        Raises:
            InvalidCredentials: the name and password do not let anyone in.
        """
        name = username.strip().lower()
        with self._session() as session:
            user = session.scalar(select(User).where(User.username == name))
        if len(password) > MAX_PASSWORD_LENGTH:
            raise InvalidCredentials()
        stored = user.password_hash if user is not None else self._dummy_hash
        if not self._verify(stored, password) or user is None or user.disabled:
            raise InvalidCredentials()
        rehashed = self._hash(password) if self._needs_rehash(stored) else None
        now = self._clock()
        with self._session() as session, session.begin():
            values: dict[str, Any] = {"last_login_at": now}
            if rehashed is not None:
                values["password_hash"] = rehashed
            session.execute(update(User).where(User.id == user.id).values(**values))
        if rehashed is not None:
            log.info("password hash of %s renewed with the current parameters", name)
        return UserRecord(user.id, user.username, Role(user.role), False, user.created_at, now)

    def change_password(
        self, user_id: int, current: str, new: str, *, keep_credential_id: int | None = None
    ) -> int:
        """Set a new password after checking the current one; ends the user's other sessions
        and tokens (API keys stay). Returns how many credentials were ended.

        Raises:
            InvalidCredentials: ``current`` is not the user's password.
            InvalidAccountInput: ``new`` is too short or too long.
        """
        self._check_password(new)
        with self._session() as session:
            user = session.get(User, user_id)
        if user is None:
            raise UserNotFound(user_id)
        if len(current) > MAX_PASSWORD_LENGTH or not self._verify(user.password_hash, current):
            raise InvalidCredentials()
        password_hash = self._hash(new)
        with self._session() as session, session.begin():
            session.execute(
                update(User).where(User.id == user_id).values(password_hash=password_hash)
            )
            conditions = [Credential.user_id == user_id, Credential.kind != CredentialKind.api_key]
            if keep_credential_id is not None:
                conditions.append(Credential.id != keep_credential_id)
            ended = _revoke_where(session, self._clock(), *conditions)
        log.info("user %s changed their password; %d credentials ended", user.username, ended)
        return ended

    def _check_password(self, password: str) -> str:
        if len(password) < self.settings.min_password_length:
            raise InvalidAccountInput(
                f"the password is too short: at least {self.settings.min_password_length} "
                "characters",
                code="weak_password",
                min_length=self.settings.min_password_length,
            )
        if len(password) > MAX_PASSWORD_LENGTH:
            raise InvalidAccountInput(
                f"the password is too long: at most {MAX_PASSWORD_LENGTH} characters",
                code="weak_password",
                max_length=MAX_PASSWORD_LENGTH,
            )
        return password

    @cached_property
    def _dummy_hash(self) -> str:
        return self._hash(secrets.token_urlsafe(16))

    @contextmanager
    def _hash_slot(self) -> Iterator[None]:
        if not self._hashing.acquire(timeout=HASH_WAIT_S):
            raise AccountsBusy()
        try:
            yield
        finally:
            self._hashing.release()

    def _hash(self, password: str) -> str:
        with self._hash_slot():
            return self._hasher.hash(password)

    def _verify(self, stored: str, password: str) -> bool:
        with self._hash_slot():
            try:
                return self._hasher.verify(stored, password)
            except (VerificationError, InvalidHashError):
                return False

    def _needs_rehash(self, stored: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    # --- credentials --------------------------------------------------------------------------

    def issue(
        self,
        user_id: int,
        kind: CredentialKind | str,
        *,
        name: str | None = None,
        ttl_s: float | None = None,
    ) -> str:
        """A new credential for the user; returns its secret (shown once, only its hash kept).

        Args:
            user_id: whose credential.
            kind: ``session``, ``token`` or ``api_key``.
            name: a label (API keys).
            ttl_s: seconds until it expires; by default ``session_ttl_s`` for sessions,
                ``token_ttl_s`` for tokens, never for API keys.
        """
        return self.issue_credential(user_id, kind, name=name, ttl_s=ttl_s).secret

    def issue_credential(
        self,
        user_id: int,
        kind: CredentialKind | str,
        *,
        name: str | None = None,
        ttl_s: float | None = None,
    ) -> Issued:
        """Like :meth:`issue`, also returning what is kept of the credential (its id, prefix)."""
        try:
            kind = CredentialKind(kind)
        except ValueError:
            raise InvalidAccountInput(
                f"unknown credential kind {kind!r}: one of {[str(k) for k in CredentialKind]}",
                code="invalid_credential",
            ) from None
        if name is not None and not 1 <= len(name.strip()) <= 100:
            raise InvalidAccountInput(
                "a credential name is 1 to 100 characters", code="invalid_credential"
            )
        if ttl_s is not None and ttl_s <= 0:
            raise InvalidAccountInput(
                "a credential's lifetime must be positive", code="invalid_credential"
            )
        if ttl_s is None:
            ttl_s = {
                CredentialKind.session: self.settings.session_ttl_s,
                CredentialKind.token: self.settings.token_ttl_s,
            }.get(kind)
        secret = SECRET_PREFIXES[kind] + secrets.token_urlsafe(32)
        now = self._clock()
        with self._session() as session, session.begin():
            user = session.get(User, user_id)
            if user is None:
                raise UserNotFound(user_id)
            # Each login adds rows: the user's long-ended ones go, so the table stays small.
            _purge(session, now - timedelta(seconds=PURGE_AFTER_S), Credential.user_id == user_id)
            credential = Credential(
                user_id=user_id,
                kind=str(kind),
                name=name.strip() if name is not None else None,
                secret_sha256=_digest(secret),
                prefix=secret[:SHOWN_PREFIX],
                created_at=now,
                expires_at=None if ttl_s is None else now + timedelta(seconds=ttl_s),
                last_used_at=None,
                revoked_at=None,
            )
            session.add(credential)
            session.flush()
            record = _credential(credential)
        return Issued(secret, record)

    def resolve(self, secret: str) -> Principal | None:
        """Who ``secret`` stands for; None when it is unknown, revoked, expired or its user is
        disabled. A session used here lasts ``session_ttl_s`` from now."""
        if not secret or len(secret) > MAX_SECRET_LENGTH:
            return None
        now = self._clock()
        with self._session() as session:
            row = session.execute(
                select(Credential, User)
                .join(User, User.id == Credential.user_id)
                .where(Credential.secret_sha256 == _digest(secret))
            ).first()
        if row is None:
            return None
        credential, user = row
        if credential.revoked_at is not None or user.disabled:
            return None
        if credential.expires_at is not None and credential.expires_at <= now:
            return None
        kind = CredentialKind(credential.kind)
        if self._due_for_touch(credential, now):
            self._touch(credential.id, kind, now)
        return Principal(user.id, user.username, Role(user.role), credential.id, kind)

    def _due_for_touch(self, credential: Credential, now: datetime) -> bool:
        # A session shorter than two minutes still slides: touch it twice per lifetime.
        every = min(TOUCH_EVERY_S, self.settings.session_ttl_s / 2)
        last = credential.last_used_at or credential.created_at
        return (now - last).total_seconds() >= every

    def _touch(self, credential_id: int, kind: CredentialKind, now: datetime) -> None:
        values: dict[str, Any] = {"last_used_at": now}
        if kind == CredentialKind.session:
            values["expires_at"] = now + timedelta(seconds=self.settings.session_ttl_s)
        with self._session() as session, session.begin():
            session.execute(
                update(Credential)
                .where(Credential.id == credential_id, Credential.revoked_at.is_(None))
                .values(**values)
            )

    def get_credential(self, credential_id: int) -> CredentialRecord:
        with self._session() as session:
            credential = session.get(Credential, credential_id)
            if credential is None:
                raise CredentialNotFound(credential_id)
            return _credential(credential)

    def revoke(
        self,
        credential_id: int,
        *,
        user_id: int | None = None,
        kind: CredentialKind | str | None = None,
    ) -> None:
        """End a credential now (already ended: nothing to do).

        Args:
            credential_id: which.
            user_id: when given, the credential must be this user's (else CredentialNotFound).
            kind: when given, the credential must be of this kind (else CredentialNotFound).
        """
        with self._session() as session, session.begin():
            credential = session.get(Credential, credential_id)
            if (
                credential is None
                or (user_id is not None and credential.user_id != user_id)
                or (kind is not None and credential.kind != str(kind))
            ):
                raise CredentialNotFound(credential_id)
            if credential.revoked_at is None:
                credential.revoked_at = self._clock()

    def revoke_secret(self, secret: str) -> bool:
        """End the credential ``secret`` stands for; False when it stands for none."""
        if not secret or len(secret) > MAX_SECRET_LENGTH:
            return False
        with self._session() as session, session.begin():
            ended = _revoke_where(
                session, self._clock(), Credential.secret_sha256 == _digest(secret)
            )
        return ended > 0

    def list_credentials(
        self,
        user_id: int,
        *,
        kind: CredentialKind | str | None = None,
        include_ended: bool = False,
    ) -> list[CredentialRecord]:
        """A user's credentials, oldest first (never their secrets); by default only those
        still valid."""
        query = select(Credential).where(Credential.user_id == user_id).order_by(Credential.id)
        if kind is not None:
            query = query.where(Credential.kind == str(CredentialKind(kind)))
        now = self._clock()
        with self._session() as session:
            rows = [_credential(c) for c in session.scalars(query)]
        if include_ended:
            return rows
        return [
            row
            for row in rows
            if row.revoked_at is None and (row.expires_at is None or row.expires_at > now)
        ]

    def purge_ended(self, older_than_s: float = PURGE_AFTER_S) -> int:
        """Delete credentials revoked or expired more than ``older_than_s`` ago; returns how
        many."""
        cutoff = self._clock() - timedelta(seconds=older_than_s)
        with self._session() as session, session.begin():
            return _purge(session, cutoff)

    # --- plumbing -----------------------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with self._sessions() as session:
                yield session
        except SQLAlchemyError as exc:
            if not is_unavailable(exc):
                raise
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StoreError(f"store unavailable ({safe_url(self.store.url)}): {reason}") from exc


def check_username(username: str) -> str:
    """The user name as kept (trimmed, lower-case); 1 to 64 letters, digits or ``._-@``.

    Raises:
        InvalidAccountInput: anything else.
    """
    name = username.strip().lower()
    if not USERNAME_PATTERN.fullmatch(name):
        raise InvalidAccountInput(
            f"invalid user name {username!r}: 1 to 64 letters (a-z), digits or . _ - @",
            code="invalid_username",
            username=username,
        )
    return name


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidAccountInput(
            f"unknown role {role!r}: one of {', '.join(r.value for r in Role)}",
            code="invalid_role",
            role=str(role),
        ) from None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _serialize(session: Session) -> None:
    """Wait for, and hold until this transaction ends, the lock of checks spanning rows.

    The checks (no user yet; another enabled admin left) read rows that a concurrent change may
    add or remove, so row locks cannot guard them. A no-op write to the store's one state row
    serves: its row lock on PostgreSQL and MariaDB, the database's write lock on SQLite, held
    for a short transaction, and only by these rare changes.
    """
    session.execute(
        update(WatchlistState).where(WatchlistState.id == 1).values(version=WatchlistState.version)
    )


def _revoke_where(session: Session, now: datetime, *conditions: Any) -> int:
    result = session.execute(
        update(Credential)
        .where(Credential.revoked_at.is_(None), *conditions)
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _purge(session: Session, cutoff: datetime, *conditions: Any) -> int:
    result = session.execute(
        delete(Credential)
        .where((Credential.revoked_at < cutoff) | (Credential.expires_at < cutoff), *conditions)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _user(user: User) -> UserRecord:
    return UserRecord(
        user.id, user.username, Role(user.role), user.disabled, user.created_at, user.last_login_at
    )


def _credential(credential: Credential) -> CredentialRecord:
    return CredentialRecord(
        credential.id,
        credential.user_id,
        CredentialKind(credential.kind),
        credential.name,
        credential.prefix,
        credential.created_at,
        credential.expires_at,
        credential.last_used_at,
        credential.revoked_at,
    )
