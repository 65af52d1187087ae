"""Account commands: ``user add``, ``user list``, ``user key``, ``user passwd``.

They work on the store directly, with or without a server running, so an admin locked out of
the web UI can get back in. Output follows :mod:`facewatch.cli`: JSON lines on stdout, messages
on stderr, exit 1 when the input was refused, 2 when nothing could run.

Passwords are read from a terminal (asked twice) or, with ``--password-stdin``, from the first
line of standard input; never from the command line, where other users could see them.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from facewatch.config import Settings
from facewatch.watchlist.store import Store
from facewatch.web.accounts import AccountError, Accounts
from facewatch.web.auth import CredentialKind, Role

EXIT_INPUT = 1
EXIT_FATAL = 2

Handler = Callable[[argparse.Namespace, Settings], int]


class PasswordUnavailable(Exception):
    """No password could be read (no terminal, empty input, the two entries differ)."""


def add_user_commands(commands: Any, data_dir: argparse.ArgumentParser) -> None:
    """Register ``user`` and its actions; ``data_dir`` is the parent parser with --data-dir."""
    user = commands.add_parser("user", help="accounts of the web server: add, list, key, passwd")
    actions = user.add_subparsers(dest="user_action", required=True, metavar="ACTION")

    def add(name: str, handler: Handler, text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(name, help=text, parents=[data_dir])
        sub.set_defaults(handler=handler)
        return sub

    add_user = add("add", _add, "create a user")
    add_user.add_argument("name", metavar="NAME")
    add_user.add_argument(
        "--role", choices=[role.value for role in Role], default=Role.viewer.value
    )
    _password_stdin(add_user)

    add("list", _list, "every user, one line each")

    key = add("key", _key, "print a new API key of a user (shown this once)")
    key.add_argument("name", metavar="NAME")
    key.add_argument("--key-name", default="cli", help="a label to tell the key apart")

    passwd = add("passwd", _passwd, "set a user's password (ends their sessions and tokens)")
    passwd.add_argument("name", metavar="NAME")
    _password_stdin(passwd)


def _password_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def _error(message: str) -> None:
    print(f"facewatch: error: {message}", file=sys.stderr)


@contextmanager
def _accounts(settings: Settings) -> Iterator[Accounts]:
    store = Store(settings.database_url)
    try:
        yield Accounts(store, settings.auth)
    finally:
        store.close()


def read_password(args: argparse.Namespace) -> str:
    """The new password: stdin's first line with ``--password-stdin``, else asked twice.

    Raises:
        PasswordUnavailable: none could be read.
    """
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise PasswordUnavailable("no password on standard input")
        return line
    if not sys.stdin.isatty():
        raise PasswordUnavailable("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password again: "):
        raise PasswordUnavailable("the two passwords differ")
    return first


def _refusing(handler: Handler) -> Handler:
    """Refused input (a taken name, a short password, ...) exits 1 with the reason."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return handler(args, settings)
        except (AccountError, PasswordUnavailable) as exc:
            _error(str(exc))
            return EXIT_INPUT

    return run


@_refusing
def _add(args: argparse.Namespace, settings: Settings) -> int:
    password = read_password(args)
    with _accounts(settings) as accounts:
        user = accounts.create_user(args.name, password, Role(args.role))
    _emit(user.as_dict())
    return 0


@_refusing
def _list(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(settings) as accounts:
        users = accounts.list_users()
    for user in users:
        _emit(user.as_dict())
    print(f"{len(users)} users", file=sys.stderr)
    return 0


@_refusing
def _key(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(settings) as accounts:
        user = accounts.find_user(args.name)
        issued = accounts.issue_credential(user.id, CredentialKind.api_key, name=args.key_name)
    _emit({"user": user.username, **issued.credential.as_dict(), "key": issued.secret})
    return 0


@_refusing
def _passwd(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(settings) as accounts:
        user = accounts.find_user(args.name)
        password = read_password(args)
        accounts.update_user(user.id, password=password)
    _emit({"user": user.username, "password_changed": True})
    return 0
