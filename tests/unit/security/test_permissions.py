from __future__ import annotations

import pytest

from runtime.security.permissions import (
    MATRIX,
    OP_DESCRIPTIONS,
    Op,
    PermissionDenied,
    Role,
    allowed,
    matrix_markdown,
    require,
    role_for,
)
from runtime.security.tokens import GRANTABLE_ROLES, Identity

# The expected matrix, written out independently of the code under test.
# Columns: owner, editor, commenter, viewer, none.
EXPECTED: dict[str, tuple[int, int, int, int, int]] = {
    "join": (1, 1, 1, 1, 0),
    "presence": (1, 1, 1, 1, 0),
    "publish": (1, 1, 0, 0, 0),
    "comment": (1, 1, 1, 0, 0),
    "react": (1, 1, 1, 0, 0),
    "resolve": (1, 1, 0, 0, 0),
    "manage_members": (1, 0, 0, 0, 0),
    "read_history": (1, 1, 1, 1, 0),
    "delete_session": (1, 0, 0, 0, 0),
}
ROLES = ("owner", "editor", "commenter", "viewer", "none")

CELLS = [(role, op, bool(row[i])) for op, row in EXPECTED.items() for i, role in enumerate(ROLES)]


def test_expectation_table_covers_every_role_and_operation() -> None:
    assert set(EXPECTED) == {op.value for op in Op}
    assert set(ROLES) == {r.value for r in Role} == set(MATRIX)
    assert len(CELLS) == len(Role) * len(Op)


@pytest.mark.parametrize(("role", "op", "expected"), CELLS)
def test_matrix_cell(role: str, op: str, expected: bool) -> None:
    assert allowed(Role(role), Op(op)) is expected
    if expected:
        require(Role(role), Op(op))
    else:
        with pytest.raises(PermissionDenied) as info:
            require(Role(role), Op(op))
        assert (info.value.op, info.value.role) == (Op(op), Role(role))


def test_permission_denied_message_is_clear() -> None:
    with pytest.raises(PermissionDenied) as info:
        require(Role.VIEWER, Op.PUBLISH)
    assert str(info.value) == "role 'viewer' may not 'publish'; requires one of: owner, editor"
    assert info.value.code == "permission_denied"


def test_token_roles_match_permission_roles() -> None:
    assert {r.value for r in Role} == GRANTABLE_ROLES


def _ident(**grants: str) -> Identity:
    return Identity(user_id="alice", name="Alice", guest=False, grants=grants)


def test_token_grant_wins_over_membership_and_default() -> None:
    assert role_for(_ident(s1="editor"), "s1", "viewer", "none") is Role.EDITOR
    # A grant may also downgrade a stored membership.
    assert role_for(_ident(s1="viewer"), "s1", "owner", "commenter") is Role.VIEWER
    assert role_for(_ident(s1="none"), "s1", "owner", "commenter") is Role.NONE


def test_membership_then_default_access() -> None:
    # A grant for another session does not apply.
    assert role_for(_ident(other="owner"), "s1", "commenter", "none") is Role.COMMENTER
    assert role_for(_ident(), "s1", None, "viewer") is Role.VIEWER
    assert role_for(_ident(), "s1", None, "none") is Role.NONE
    guest = Identity(user_id="guest-1", name="Guest 1", guest=True)
    assert role_for(guest, "s1", None, "commenter") is Role.COMMENTER


def test_unknown_roles_fail_closed() -> None:
    assert role_for(_ident(s1="superuser"), "s1", "owner", "viewer") is Role.NONE
    assert role_for(_ident(), "s1", "admin", "viewer") is Role.NONE


@pytest.mark.parametrize("default", ["owner", "bogus", ""])
def test_default_access_is_never_owner_or_unknown(default: str) -> None:
    with pytest.raises(ValueError, match="default_access"):
        role_for(_ident(), "s1", None, default)


def test_default_access_editor_is_for_open_deployments() -> None:
    assert role_for(_ident(), "s1", None, "editor") is Role.EDITOR
    assert role_for(_ident(), "s1", "viewer", "editor") is Role.VIEWER  # membership still wins


def test_markdown_matrix_is_rendered_from_the_table() -> None:
    md = matrix_markdown()
    lines = md.strip().split("\n")
    assert lines[0] == "| operation | owner | editor | commenter | viewer | none | meaning |"
    assert len(lines) == 2 + len(Op)
    for line, (op, row) in zip(lines[2:], EXPECTED.items(), strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == f"`{op}`"
        assert cells[1:6] == ["✓" if x else "—" for x in row]
        assert cells[6] == OP_DESCRIPTIONS[Op(op)]
