"""Authorization: per-session roles and the one permission matrix."""

from __future__ import annotations

import enum

from runtime.security.tokens import Identity


class Role(enum.StrEnum):
    """A user's role in one session, strongest first."""

    OWNER = "owner"
    EDITOR = "editor"
    COMMENTER = "commenter"
    VIEWER = "viewer"
    NONE = "none"


class Op(enum.StrEnum):
    """An operation a client can attempt on a session."""

    JOIN = "join"
    PRESENCE = "presence"
    PUBLISH = "publish"
    COMMENT = "comment"
    REACT = "react"
    RESOLVE = "resolve"
    MANAGE_MEMBERS = "manage_members"
    READ_HISTORY = "read_history"
    DELETE_SESSION = "delete_session"


OP_DESCRIPTIONS: dict[Op, str] = {
    Op.JOIN: "join the session and receive its live events",
    Op.PRESENCE: "publish presence (cursor, selection, status)",
    Op.PUBLISH: "publish events that change shared state",
    Op.COMMENT: "add or edit own comments",
    Op.REACT: "add or remove reactions",
    Op.RESOLVE: "resolve or reopen comment threads",
    Op.MANAGE_MEMBERS: "add, remove or change members' roles",
    Op.READ_HISTORY: "replay past events",
    Op.DELETE_SESSION: "delete the session and its history",
}

# THE permission matrix: everything not listed is denied. Docs are rendered from
# it (matrix_markdown) and tests pin every cell, so change it deliberately.
MATRIX: dict[Role, frozenset[Op]] = {
    Role.OWNER: frozenset(Op),
    Role.EDITOR: frozenset(
        {
            Op.JOIN,
            Op.PRESENCE,
            Op.PUBLISH,
            Op.COMMENT,
            Op.REACT,
            Op.RESOLVE,
            Op.READ_HISTORY,
        }
    ),
    Role.COMMENTER: frozenset({Op.JOIN, Op.PRESENCE, Op.COMMENT, Op.REACT, Op.READ_HISTORY}),
    Role.VIEWER: frozenset({Op.JOIN, Op.PRESENCE, Op.READ_HISTORY}),
    Role.NONE: frozenset(),
}

# What a deployment may grant to non-members. Editor is for open, trusting setups
# (the dev profile's default, so guests can collaborate); owner is never a default.
DEFAULT_ACCESS_CHOICES = frozenset({Role.NONE, Role.VIEWER, Role.COMMENTER, Role.EDITOR})


class PermissionDenied(Exception):
    """``role`` may not perform ``op``."""

    code = "permission_denied"

    def __init__(self, op: Op, role: Role) -> None:
        self.op = op
        self.role = role
        allowed_roles = [r.value for r in Role if op in MATRIX[r]]
        super().__init__(
            f"role {role.value!r} may not {op.value!r}; requires one of: {', '.join(allowed_roles)}"
        )


def _parse_role(value: str | None) -> Role | None:
    if value is None:
        return None
    try:
        return Role(value)
    except ValueError:
        # An unknown stored/granted role fails closed rather than guessing.
        return Role.NONE


def role_for(
    identity: Identity, session_id: str, member_role: str | None, default_access: str
) -> Role:
    """The effective role of ``identity`` in ``session_id``.

    Precedence: the token's grant for the session (it may also downgrade), then the
    stored membership, then ``default_access`` (none, viewer, commenter or editor).
    """
    # StrEnum members hash and compare as their values, so a plain str works here.
    if default_access not in DEFAULT_ACCESS_CHOICES:
        choices = ", ".join(sorted(r.value for r in DEFAULT_ACCESS_CHOICES))
        raise ValueError(f"default_access must be one of {choices}, not {default_access!r}")
    granted = _parse_role(identity.grants.get(session_id))
    if granted is not None:
        return granted
    stored = _parse_role(member_role)
    if stored is not None:
        return stored
    return Role(default_access)


def allowed(role: Role, op: Op) -> bool:
    """True if the matrix lets ``role`` perform ``op``."""
    return op in MATRIX[role]


def require(role: Role, op: Op) -> None:
    """Raise :class:`PermissionDenied` unless ``role`` may perform ``op``."""
    if not allowed(role, op):
        raise PermissionDenied(op, role)


def matrix_markdown() -> str:
    """The matrix as a Markdown table (for generated docs; never edit docs by hand)."""
    roles = list(Role)
    lines = [
        "| operation | " + " | ".join(r.value for r in roles) + " | meaning |",
        "| --- | " + " | ".join(":---:" for _ in roles) + " | --- |",
    ]
    for op in Op:
        cells = " | ".join("✓" if allowed(r, op) else "—" for r in roles)
        lines.append(f"| `{op.value}` | {cells} | {OP_DESCRIPTIONS[op]} |")
    return "\n".join(lines) + "\n"
