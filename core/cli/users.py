"""``user`` and ``audit``: manage local accounts, read the audit log."""

from __future__ import annotations

import argparse
import getpass
import sys

from core.cli import CliError, positive_int, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    user = subparsers.add_parser("user", help="manage user accounts (auth modes password/oidc)")
    actions = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="create an account (asks for the password)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="give the admin role")
    _password_source(add)
    add.add_argument("--no-password", action="store_true",
                     help="no local password: the user signs in through OIDC only")
    add.set_defaults(func=_add)

    listing = actions.add_parser("list", help="list accounts")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list)

    passwd = actions.add_parser("passwd", help="set a user's password")
    passwd.add_argument("name")
    _password_source(passwd)
    passwd.set_defaults(func=_passwd)

    admin = actions.add_parser("admin", help="give or take the admin role")
    admin.add_argument("name")
    admin.add_argument("--off", action="store_true", help="take the role away")
    admin.set_defaults(func=_admin)

    remove = actions.add_parser("remove", help="delete an account (their data stays)")
    remove.add_argument("name")
    remove.set_defaults(func=_remove)

    log = subparsers.add_parser("audit", help="show the audit log (who relabelled, deleted, ...)")
    log.add_argument("--limit", type=positive_int, default=50,
                     help="show the newest N entries (default: 50)")
    log.add_argument("--actor", help="only entries by this user")
    log.add_argument("--action", help="only this action (as listed in the log)")
    log.add_argument("--json", action="store_true", help="machine-readable output")
    log.set_defaults(func=_audit)


def _password_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input (scripts)")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise CliError("--password-stdin: no password on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for the password; use --password-stdin")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        raise CliError("the two passwords differ")
    return first


def _add(args: argparse.Namespace) -> int:
    from core.users import accounts

    password = None if args.no_password else _read_password(args)
    try:
        info = accounts.add_user(args.name, password, is_admin=args.admin, actor="cli")
    except accounts.AccountError as exc:
        raise CliError(str(exc)) from exc
    print(f"added user {info.name}" + (" (admin)" if info.is_admin else ""))
    return 0


def _list(args: argparse.Namespace) -> int:
    from core.users import accounts

    users = accounts.list_users()
    if args.json:
        print_json([{"name": u.name, "admin": u.is_admin, "password": u.has_password,
                     "created_at": u.created_at} for u in users])
        return 0
    if not users:
        print("no users")
    for u in users:
        flags = ", ".join(f for f, on in (("admin", u.is_admin), ("password", u.has_password)) if on)
        print(f"{u.name}  [{flags or '-'}]  since {u.created_at:%Y-%m-%d}")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    from core.users import accounts

    if accounts.get_user(args.name) is None:
        raise CliError(f"no user named {args.name!r}")
    try:
        accounts.set_password(args.name, _read_password(args), actor="cli")
    except accounts.AccountError as exc:
        raise CliError(str(exc)) from exc
    print(f"password changed for {args.name}")
    return 0


def _admin(args: argparse.Namespace) -> int:
    from core.users import accounts

    try:
        accounts.set_admin(args.name, not args.off, actor="cli")
    except accounts.AccountError as exc:
        raise CliError(str(exc)) from exc
    print(f"{args.name}: admin {'off' if args.off else 'on'}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from core.users import accounts

    try:
        accounts.remove_user(args.name, actor="cli")
    except accounts.AccountError as exc:
        raise CliError(str(exc)) from exc
    print(f"removed user {args.name}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from core.users import audit

    rows = audit.entries(actor=args.actor, action=args.action, limit=args.limit)
    if args.json:
        print_json([row.__dict__ for row in rows])
        return 0
    if not rows:
        print("audit log is empty")
    for r in rows:
        target = f"{r.target_kind or ''} {r.target_id or ''}".strip()
        print(f"{r.at:%Y-%m-%d %H:%M:%S}  {r.actor:<16} {r.action:<14} {target}  {r.detail or ''}")
    return 0
