"""``tandem keys generate|rotate`` and ``tandem audit verify``: the storage side of security.

``keys rotate`` re-encrypts stored sensitive payloads, comment bodies and thread
metadata under the current key, in batches (one transaction each), while the
server keeps running; it reports the counts and records ``keys.rotated`` in the
audit log. ``audit verify`` checks the audit chain and its head and exits 1
naming the first bad seq.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import trio

from runtime.app import open_stores
from runtime.config import ConfigError, Settings, add_setting_flags, load_settings
from runtime.gateways.comment_store_postgres import PostgresCommentStore
from runtime.gateways.encryption import keyring_from_settings
from runtime.gateways.postgres import PostgresEventStore
from runtime.security.audit import VerifyResult
from runtime.security.crypto import new_key_b64


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="encryption keys: generate one, rotate stored data")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_commands.add_parser("generate", help="print a fresh key entry `id:base64`")
    generate.add_argument(
        "--id", dest="key_id", help="key id (default: k<UTC date and time>)", default=None
    )
    rotate = keys_commands.add_parser(
        "rotate", help="re-encrypt stored data under TANDEM_ENCRYPTION_KEY_CURRENT (online)"
    )
    rotate.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    add_setting_flags(rotate)
    audit = commands.add_parser("audit", help="the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify_cmd = audit_commands.add_parser(
        "verify", help="check the audit hash chain and head; exit 1 at the first bad seq"
    )
    add_setting_flags(verify_cmd)


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run ``keys``/``audit``; ``argv`` is the full command line (for the setting flags)."""
    if args.command == "keys" and args.keys_command == "generate":
        key_id = args.key_id or time.strftime("k%Y%m%d%H%M%S", time.gmtime())
        print(f"{key_id}:{new_key_b64()}")
        return 0
    settings = load_settings(_setting_argv(argv[2:]))
    if args.command == "keys":
        return trio.run(rotate_keys, settings, args.batch_size)
    return trio.run(verify_audit, settings)


def _setting_argv(argv: Sequence[str]) -> list[str]:
    """Drop the flags that are not settings (``--batch-size N``) before ``load_settings``."""
    out: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
        elif item == "--batch-size":
            skip = True
        elif not item.startswith("--batch-size="):
            out.append(item)
    return out


async def rotate_keys(settings: Settings, batch_size: int = 500) -> int:
    if keyring_from_settings(settings) is None:
        raise ConfigError("keys rotate needs TANDEM_ENCRYPTION_KEYS")
    async with open_stores(settings) as stores:
        events = stores.events
        assert isinstance(events, PostgresEventStore)
        report = await events.rotate_keys(batch_size=batch_size)
        left = await events.count_needing_rotation()
        # Comment bodies and thread metadata (runtime/gateways/comment_sealing.py) too.
        comment_rows = comment_batches = comments_left = 0
        if stores.collab is not None and isinstance(stores.collab.comments, PostgresCommentStore):
            comment_rows, comment_batches = await stores.collab.comments.rotate_keys(
                batch_size=batch_size
            )
            comments_left = await stores.collab.comments.count_needing_rotation()
            if stores.audit is not None and (comment_rows or comments_left):
                await stores.audit.record(
                    action="keys.rotated",
                    actor="cli",
                    target="comments",
                    details={
                        "key_id": report.key_id,
                        "rotated": comment_rows,
                        "left": comments_left,
                    },
                )
        if stores.audit is not None:
            await stores.audit.record(
                action="keys.rotated",
                actor="cli",
                target="session_events",
                details={"key_id": report.key_id, "rotated": report.rotated, "left": left},
            )
    print(
        f"tandem keys rotate: {report.rotated} rows re-encrypted under {report.key_id!r}"
        f" in {report.batches} batches; {left} rows left under other keys"
    )
    print(
        f"tandem keys rotate: {comment_rows} comment/thread rows re-encrypted under"
        f" {report.key_id!r} in {comment_batches} batches; {comments_left} rows left under"
        " other keys"
    )
    return 0 if left == 0 and comments_left == 0 else 1


def describe(result: VerifyResult) -> str:
    if result.ok:
        return f"audit log OK: {result.checked} records, head {result.head_hash[:16]}"
    return (
        f"audit log BROKEN at seq {result.first_bad_seq}: {result.reason}"
        f" ({result.checked} records verified before it)"
    )


async def verify_audit(settings: Settings) -> int:
    async with open_stores(settings) as stores:
        assert stores.audit is not None
        result = await stores.audit.verify()
    print(f"tandem audit verify: {describe(result)}", file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1
