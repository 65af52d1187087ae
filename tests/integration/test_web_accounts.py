"""Accounts on SQLite, PostgreSQL and MariaDB: users, passwords, credentials and their lifetimes.

Time is moved with an injected clock, never waited for. Most tests hash with argon2id at a low
cost to stay fast; the hashing test uses the real defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, text

from facewatch.cli_users import add_user_commands
from facewatch.config import AuthSettings, load_settings
from facewatch.watchlist.models import Credential, User
from facewatch.watchlist.store import Store
from facewatch.web.accounts import (
    Accounts,
    CredentialNotFound,
    InvalidAccountInput,
    InvalidCredentials,
    LastAdmin,
    SetupDone,
    UsernameTaken,
    UserNotFound,
)
from facewatch.web.auth import CredentialKind, Role

PASSWORD = "correct horse battery staple"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class Clock:
    """A UTC clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class CountingHasher(PasswordHasher):
    """The real hasher, counting verifications (to see an unknown user costs one too)."""

    verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified += 1
        return super().verify(hash, password)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    yield store
    store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_accounts(
    store: Store, clock: Clock, hasher: PasswordHasher = FAST, **settings: object
) -> Accounts:
    auth = AuthSettings(**{"session_ttl_s": 3600, "token_ttl_s": 600, **settings})  # type: ignore[arg-type]
    return Accounts(store, auth, clock=clock, hasher=hasher)


@pytest.fixture
def accounts(store: Store, clock: Clock) -> Accounts:
    return make_accounts(store, clock)


def test_users_are_created_listed_and_found(accounts: Accounts) -> None:
    assert not accounts.has_users()
    admin = accounts.create_user("Alice@Example.org", PASSWORD, "admin")
    viewer = accounts.create_user("bob", PASSWORD, Role.viewer)

    assert accounts.has_users()
    assert admin.username == "alice@example.org"  # names are kept lower-case
    assert (admin.role, viewer.role) == (Role.admin, Role.viewer)
    assert not admin.disabled and admin.last_login_at is None
    assert [u.username for u in accounts.list_users()] == ["alice@example.org", "bob"]
    assert accounts.find_user("ALICE@example.org") == admin
    assert accounts.get_user(viewer.id) == viewer
    assert admin.as_dict()["role"] == "admin"
    with pytest.raises(UsernameTaken):
        accounts.create_user("BOB", PASSWORD, "viewer")
    with pytest.raises(UserNotFound):
        accounts.find_user("carol")


@pytest.fixture
def sqlite_accounts(tmp_path: Path, clock: Clock) -> Iterator[Accounts]:
    """For checks made before the database is reached: one backend is enough."""
    store = Store(f"sqlite:///{tmp_path / 'accounts.db'}")
    yield make_accounts(store, clock)
    store.close()


@pytest.mark.parametrize(
    ("username", "password", "role", "code"),
    [
        ("", PASSWORD, "viewer", "invalid_username"),
        ("a" * 65, PASSWORD, "viewer", "invalid_username"),
        ("with space", PASSWORD, "viewer", "invalid_username"),
        ("semi;colon", PASSWORD, "viewer", "invalid_username"),
        ("émile", PASSWORD, "viewer", "invalid_username"),
        ("carol", "short", "viewer", "weak_password"),
        ("carol", "x" * 1025, "viewer", "weak_password"),
        ("carol", PASSWORD, "root", "invalid_role"),
    ],
)
def test_bad_user_input_is_refused_with_a_reason(
    sqlite_accounts: Accounts, username: str, password: str, role: str, code: str
) -> None:
    accounts = sqlite_accounts
    with pytest.raises(InvalidAccountInput) as refused:
        accounts.create_user(username, password, role)
    assert refused.value.code == code
    assert refused.value.status == 422
    assert not accounts.has_users()


@pytest.mark.parametrize("username", ["a", "a" * 64, "ops.team_1-x@site.example", "0"])
def test_good_user_names_are_taken(sqlite_accounts: Accounts, username: str) -> None:
    assert sqlite_accounts.create_user(username, PASSWORD, "viewer").username == username


def test_authenticate_refuses_alike_and_checks_a_hash_for_unknown_users(
    store: Store, clock: Clock
) -> None:
    hasher = CountingHasher(time_cost=1, memory_cost=1024, parallelism=1)
    accounts = make_accounts(store, clock, hasher)
    alice = accounts.create_user("alice", PASSWORD, "operator")
    carol = accounts.create_user("carol", PASSWORD, "viewer")
    accounts.update_user(carol.id, disabled=True)
    clock.advance(5)

    user = accounts.authenticate(" Alice ", PASSWORD)
    assert user.id == alice.id and user.last_login_at == clock.now
    assert accounts.get_user(alice.id).last_login_at == clock.now

    messages = set()
    for username, password in [
        ("alice", "wrong password!"),
        ("nobody", PASSWORD),
        ("carol", PASSWORD),
    ]:
        before = hasher.verified
        with pytest.raises(InvalidCredentials) as refused:
            accounts.authenticate(username, password)
        assert hasher.verified == before + 1  # the same work whether the user exists or not
        messages.add(str(refused.value))
    assert messages == {"wrong user name or password"}


def test_passwords_are_kept_as_argon2id_hashes_only(store: Store, clock: Clock) -> None:
    accounts = make_accounts(store, clock, PasswordHasher())
    accounts.create_user("alice", PASSWORD, "admin")
    with store.sql.connect() as connection:
        rows = connection.execute(text("SELECT * FROM users")).mappings().all()
    assert len(rows) == 1
    assert rows[0]["password_hash"].startswith("$argon2id$")
    assert all(PASSWORD not in str(value) for value in rows[0].values())


def test_a_hash_with_old_parameters_is_renewed_at_login(store: Store, clock: Clock) -> None:
    old = make_accounts(store, clock, PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    alice = old.create_user("alice", PASSWORD, "admin")
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    new = make_accounts(store, clock, stronger)

    new.authenticate("alice", PASSWORD)

    with store.sql.connect() as connection:
        kept = connection.execute(
            select(User.password_hash).where(User.id == alice.id)
        ).scalar_one()
    assert "m=2048,t=2,p=1" in kept
    assert not stronger.check_needs_rehash(kept)
    assert new.authenticate("alice", PASSWORD).id == alice.id


def test_secrets_are_kept_only_as_sha256(accounts: Accounts, store: Store) -> None:
    alice = accounts.create_user("alice", PASSWORD, "admin")
    issued = {
        kind: accounts.issue_credential(alice.id, kind, name="label") for kind in CredentialKind
    }
    with store.sql.connect() as connection:
        rows = connection.execute(text("SELECT * FROM credentials ORDER BY id")).mappings().all()
    assert [row["kind"] for row in rows] == [str(kind) for kind in CredentialKind]
    for row, (kind, new) in zip(rows, issued.items(), strict=True):
        assert new.secret.startswith({"session": "fws_", "token": "fwt_", "api_key": "fwk_"}[kind])
        assert row["secret_sha256"] == hashlib.sha256(new.secret.encode()).hexdigest()
        assert row["prefix"] == new.secret[:12] == new.credential.prefix
        assert all(new.secret not in str(value) for value in row.values())
        assert new.secret not in json.dumps(new.credential.as_dict())


def test_issued_credentials_resolve_to_their_user(accounts: Accounts) -> None:
    alice = accounts.create_user("alice", PASSWORD, "operator")
    secrets = {kind: accounts.issue(alice.id, kind) for kind in CredentialKind}
    assert len(set(secrets.values())) == 3

    for kind, secret in secrets.items():
        principal = accounts.resolve(secret)
        assert principal is not None
        assert (principal.user_id, principal.username, principal.role, principal.kind) == (
            alice.id,
            "alice",
            Role.operator,
            kind,
        )
    for bad in ["", "fwk_unknown", secrets[CredentialKind.api_key] + "x", "x" * 10_000]:
        assert accounts.resolve(bad) is None
    with pytest.raises(UserNotFound):
        accounts.issue(alice.id + 100, "token")
    with pytest.raises(InvalidAccountInput):
        accounts.issue(alice.id, "password")

    # The role is read at each use: a change applies to live credentials at once.
    accounts.update_user(alice.id, role="viewer")
    principal = accounts.resolve(secrets[CredentialKind.api_key])
    assert principal is not None and principal.role == Role.viewer


def test_tokens_expire_and_api_keys_last(accounts: Accounts, clock: Clock) -> None:
    alice = accounts.create_user("alice", PASSWORD, "viewer")
    token = accounts.issue(alice.id, "token")
    short = accounts.issue(alice.id, "token", ttl_s=30)
    key = accounts.issue(alice.id, "api_key")

    clock.advance(29)
    assert accounts.resolve(short) is not None
    clock.advance(2)
    assert accounts.resolve(short) is None
    clock.advance(600 - 31 - 1)
    assert accounts.resolve(token) is not None  # using a token does not extend it
    clock.advance(2)
    assert accounts.resolve(token) is None
    clock.advance(365 * 86400)
    assert accounts.resolve(key) is not None
    assert [c.kind for c in accounts.list_credentials(alice.id)] == [CredentialKind.api_key]
    assert len(accounts.list_credentials(alice.id, include_ended=True)) == 3


def test_sessions_slide_while_used_and_end_when_idle(accounts: Accounts, clock: Clock) -> None:
    alice = accounts.create_user("alice", PASSWORD, "viewer")
    session = accounts.issue(alice.id, "session")
    first = accounts.list_credentials(alice.id)[0]
    assert first.expires_at == clock.now + timedelta(seconds=3600)

    # Used every 50 minutes for five hours: it never ends, though it was issued for one hour.
    for _ in range(6):
        clock.advance(3000)
        assert accounts.resolve(session) is not None
    slid = accounts.list_credentials(alice.id)[0]
    assert slid.expires_at == clock.now + timedelta(seconds=3600)
    assert slid.last_used_at == clock.now

    # Uses within a minute are not written.
    clock.advance(30)
    assert accounts.resolve(session) is not None
    assert accounts.list_credentials(alice.id)[0].last_used_at == slid.last_used_at

    clock.advance(3600 - 30 + 1)
    assert accounts.resolve(session) is None


def test_revoked_credentials_stop_at_once(accounts: Accounts) -> None:
    alice = accounts.create_user("alice", PASSWORD, "admin")
    bob = accounts.create_user("bob", PASSWORD, "viewer")
    key = accounts.issue_credential(alice.id, "api_key", name="ci")
    other = accounts.issue(alice.id, "token")

    with pytest.raises(CredentialNotFound):
        accounts.revoke(key.credential.id, user_id=bob.id)  # not bob's to revoke
    with pytest.raises(CredentialNotFound):
        accounts.revoke(key.credential.id, kind="session")
    assert accounts.resolve(key.secret) is not None

    accounts.revoke(key.credential.id, user_id=alice.id, kind="api_key")
    accounts.revoke(key.credential.id)  # twice is fine
    assert accounts.resolve(key.secret) is None
    assert accounts.resolve(other) is not None
    assert accounts.revoke_secret(other)
    assert not accounts.revoke_secret("fwt_never_issued")
    assert accounts.resolve(other) is None
    with pytest.raises(CredentialNotFound):
        accounts.revoke(10_000)


def test_the_last_enabled_admin_is_kept(accounts: Accounts) -> None:
    root = accounts.create_user("root", PASSWORD, "admin")
    ops = accounts.create_user("ops", PASSWORD, "operator")

    for change in ({"role": "operator"}, {"role": Role.viewer}, {"disabled": True}):
        with pytest.raises(LastAdmin) as refused:
            accounts.update_user(root.id, **change)  # type: ignore[arg-type]
        assert refused.value.status == 409
    with pytest.raises(LastAdmin):
        accounts.delete_user(root.id)

    accounts.update_user(ops.id, role="admin")
    accounts.update_user(ops.id, disabled=True)  # a disabled admin does not count
    with pytest.raises(LastAdmin):
        accounts.delete_user(root.id)
    accounts.update_user(ops.id, disabled=False)

    assert accounts.update_user(root.id, role="viewer").role == Role.viewer
    with pytest.raises(LastAdmin):
        accounts.delete_user(ops.id)
    assert accounts.update_user(root.id, role="admin").role == Role.admin
    accounts.delete_user(ops.id)
    assert [u.username for u in accounts.list_users()] == ["root"]


def test_disabling_or_deleting_a_user_ends_all_their_credentials(
    accounts: Accounts, store: Store
) -> None:
    accounts.create_user("root", PASSWORD, "admin")
    bob = accounts.create_user("bob", PASSWORD, "operator")
    carol = accounts.create_user("carol", PASSWORD, "viewer")
    bobs = [accounts.issue(bob.id, kind) for kind in CredentialKind]
    carols = [accounts.issue(carol.id, kind) for kind in CredentialKind]

    accounts.update_user(bob.id, disabled=True)
    assert [accounts.resolve(secret) for secret in bobs] == [None, None, None]
    accounts.update_user(bob.id, disabled=False)
    # Enabling again does not bring the ended credentials back: bob logs in anew.
    assert [accounts.resolve(secret) for secret in bobs] == [None, None, None]
    assert accounts.authenticate("bob", PASSWORD).id == bob.id

    accounts.delete_user(carol.id)
    assert [accounts.resolve(secret) for secret in carols] == [None, None, None]
    with store.sql.connect() as connection:
        left = connection.execute(select(Credential.id).where(Credential.user_id == carol.id)).all()
    assert left == []
    with pytest.raises(UserNotFound):
        accounts.delete_user(carol.id)
    with pytest.raises(UserNotFound):
        accounts.update_user(carol.id, role="viewer")


def test_changing_the_password_ends_the_other_sessions_and_tokens(accounts: Accounts) -> None:
    alice = accounts.create_user("alice", PASSWORD, "admin")
    current = accounts.issue_credential(alice.id, "session")
    other_session = accounts.issue(alice.id, "session")
    token = accounts.issue(alice.id, "token")
    key = accounts.issue(alice.id, "api_key")

    with pytest.raises(InvalidCredentials):
        accounts.change_password(alice.id, "not the password", "a new long password")
    with pytest.raises(InvalidAccountInput):
        accounts.change_password(alice.id, PASSWORD, "short")
    assert accounts.resolve(other_session) is not None  # refused changes end nothing

    ended = accounts.change_password(
        alice.id, PASSWORD, "a new long password", keep_credential_id=current.credential.id
    )
    assert ended == 2
    assert accounts.resolve(current.secret) is not None
    assert accounts.resolve(other_session) is None
    assert accounts.resolve(token) is None
    assert accounts.resolve(key) is not None
    with pytest.raises(InvalidCredentials):
        accounts.authenticate("alice", PASSWORD)
    assert accounts.authenticate("alice", "a new long password").id == alice.id

    # A password set by an admin ends every session and token, the current one included.
    accounts.update_user(alice.id, password="set by an admin!")
    assert accounts.resolve(current.secret) is None
    assert accounts.resolve(key) is not None
    assert accounts.authenticate("alice", "set by an admin!").id == alice.id


def test_long_ended_credentials_are_purged(accounts: Accounts, clock: Clock, store: Store) -> None:
    alice = accounts.create_user("alice", PASSWORD, "viewer")
    accounts.issue(alice.id, "token")
    key = accounts.issue_credential(alice.id, "api_key")
    accounts.revoke(key.credential.id)
    kept = accounts.issue(alice.id, "api_key")
    clock.advance(8 * 86400)
    accounts.issue(alice.id, "session")  # a new login sweeps the user's long-ended rows
    with store.sql.connect() as connection:
        kinds = connection.execute(select(Credential.kind).order_by(Credential.id)).scalars().all()
    assert kinds == ["api_key", "session"]
    assert accounts.resolve(kept) is not None


# --- the command line ---------------------------------------------------------------------------


def run_cli(
    argv: list[str],
    stdin: str,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, list[dict[str, object]], str]:
    parser = argparse.ArgumentParser(prog="facewatch")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS)
    add_user_commands(parser.add_subparsers(dest="command", required=True), data)
    args = parser.parse_args(argv)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = args.handler(args, load_settings(data_dir=data_dir))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_cli_adds_lists_keys_and_resets_passwords(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    isolated_settings: None,
) -> None:
    def cli(stdin: str, *argv: str) -> tuple[int, list[dict[str, object]], str]:
        return run_cli(list(argv), stdin, tmp_path, capsys, monkeypatch)

    code, out, _ = cli(
        PASSWORD + "\n", "user", "add", "Root", "--role", "admin", "--password-stdin"
    )
    assert code == 0 and out[0]["username"] == "root" and out[0]["role"] == "admin"
    code, out, _ = cli(PASSWORD + "\n", "user", "add", "eve", "--password-stdin")
    assert code == 0 and out[0]["role"] == "viewer"

    code, out, err = cli(PASSWORD + "\n", "user", "add", "root", "--password-stdin")
    assert code == 1 and out == [] and "taken" in err
    code, out, err = cli("short\n", "user", "add", "dan", "--password-stdin")
    assert code == 1 and "too short" in err
    code, out, err = cli("", "user", "add", "dan")  # no terminal to ask on
    assert code == 1 and "--password-stdin" in err

    code, out, _ = cli("", "user", "list")
    assert code == 0 and [u["username"] for u in out] == ["root", "eve"]

    code, out, _ = cli("", "user", "key", "root", "--key-name", "backup")
    assert code == 0 and out[0]["name"] == "backup" and out[0]["kind"] == "api_key"
    secret = str(out[0]["key"])
    code, out, err = cli("", "user", "key", "nobody")
    assert code == 1 and "no user" in err

    code, out, _ = cli("a brand new password\n", "user", "passwd", "root", "--password-stdin")
    assert code == 0 and out == [{"user": "root", "password_changed": True}]

    store = Store(load_settings(data_dir=tmp_path).database_url)
    try:
        accounts = Accounts(store, AuthSettings(), hasher=FAST)
        assert accounts.authenticate("root", "a brand new password").role == Role.admin
        principal = accounts.resolve(secret)
        assert principal is not None and principal.username == "root"
    finally:
        store.close()


def race(*calls: Callable[[], object]) -> list[object]:
    """Run the calls on threads released together; returns each result or the error raised."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        barrier.wait(timeout=30)
        try:
            return call()
        except Exception as exc:  # what the test looks at
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_racing_changes_leave_one_admin_and_one_first_user(database_url: str, clock: Clock) -> None:
    # Each racer has a store of its own, as separate server and CLI processes would.
    stores = [Store(database_url) for _ in range(4)]
    try:
        racers = [make_accounts(store, clock) for store in stores]
        first = race(
            *(
                lambda a=a, name=name: a.create_first_admin(name, PASSWORD)
                for a, name in zip(racers, "abcd", strict=True)
            )
        )
        assert sum(isinstance(result, SetupDone) for result in first) == 3
        winner = next(result for result in first if not isinstance(result, Exception))
        second = racers[0].create_user("second", PASSWORD, "admin")

        # Two admins demoting each other at once: one must be refused.
        outcome = race(
            lambda: racers[1].update_user(winner.id, role="viewer"),  # type: ignore[attr-defined]
            lambda: racers[2].update_user(second.id, role="viewer"),
        )
        assert sum(isinstance(result, LastAdmin) for result in outcome) == 1
        admins = [user for user in racers[3].list_users() if user.role == Role.admin]
        assert len(admins) == 1
    finally:
        for store in stores:
            store.close()
