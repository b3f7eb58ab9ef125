"""Teams and owners, models, versions with lineage, aliases, and the audit trail."""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ownloop import needs, progress
from ownloop.access import Acting, Actor, action, authorize
from ownloop.artifacts import ArtifactStore, Staged
from ownloop.clock import Clock
from ownloop.datasets import file_digest, frame_digest, read_frame
from ownloop.errors import (
    AlreadyExistsError,
    ConcurrentChangeError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
)
from ownloop.formats import (
    PICKLE_FORMATS,
    check_archive,
    dump_skops,
    inline_onnx,
    load_model,
    read_header,
    sniff_format,
    untrusted_types,
)
from ownloop.names import VersionRef, parse_ref, validate_alias, validate_name
from ownloop.profile import ReferenceProfile, compute_profile
from ownloop.signature import Signature, infer_signature
from ownloop.store import Store, aware
from ownloop.store import tables as t

__all__ = [
    "PRODUCTION",
    "AliasEvent",
    "AuditEntry",
    "Model",
    "ModelVersion",
    "Registry",
    "Team",
    "require_team",
    "version_number",
]

# Matched with fullmatch: "$" would let a trailing newline through.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_URL = re.compile(r"https?://[^\s/?#]+([/?#]\S*)?")
_UNSET: Any = object()
DEFAULT_MAX_MODEL_BYTES = 2 << 30
_RETRIES = 5
PRODUCTION = "production"  # deploy's record of the stable version; nothing else moves it


@dataclass(frozen=True, repr=False)
class Team:
    name: str
    email: str | None
    webhook_url: str | None
    slack_webhook_url: str | None
    members: tuple[str, ...]
    created_at: datetime
    created_by: str
    escalate_to: str | None = None  # the team paged when a page stays unacknowledged
    escalate_after_s: float | None = None

    def __repr__(self) -> str:
        return f"Team(name={self.name!r}, members={list(self.members)!r}, email={self.email!r})"


@dataclass(frozen=True, repr=False)
class Model:
    name: str
    owner: str
    description: str | None
    latest_version: int
    aliases: dict[str, int]
    created_at: datetime
    created_by: str

    def __repr__(self) -> str:
        return (
            f"Model(name={self.name!r}, owner={self.owner!r}, "
            f"latest_version={self.latest_version}, aliases={self.aliases!r})"
        )


@dataclass(frozen=True, repr=False)
class ModelVersion:
    model: str
    version: int
    owner: str
    artifact_digest: str
    artifact_format: str
    artifact_size: int
    trusted_types: tuple[str, ...]
    unsafe_pickle: bool
    data_digest: str | None
    code_commit: str | None
    params: dict[str, Any]
    metrics: dict[str, Any]
    description: str | None
    signature: Signature
    profile_digest: str | None
    gate_status: str
    aliases: tuple[str, ...]
    created_at: datetime
    created_by: str
    needs: dict[str, Any] | None = None  # what it needs to run: library versions, requirements

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    def __repr__(self) -> str:
        return (
            f"ModelVersion(name={self.model!r}, version={self.version}, "
            f"format={self.artifact_format!r}, gate={self.gate_status!r}, "
            f"aliases={list(self.aliases)!r})"
        )


@dataclass(frozen=True, repr=False)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    target: str
    model: str | None
    before: Any
    after: Any

    def __repr__(self) -> str:
        return (
            f"AuditEntry(at='{self.at:%Y-%m-%d %H:%M:%S}', actor={self.actor!r}, "
            f"action={self.action!r}, target={self.target!r})"
        )


@dataclass(frozen=True)
class AliasEvent:
    alias: str
    version: int | None
    previous_version: int | None
    at: datetime
    by: str


def _check_url(kind: str, url: str | None) -> str | None:
    if url is None or url == "":
        return None
    if not _URL.fullmatch(url):
        raise InvalidInputError(f"{kind} '{url}' is not an http(s) URL")
    return url


def _check_escalation(team: str, to: str | None, after_s: float | None) -> dict[str, Any]:
    """Escalation needs both a team other than this one and a positive, finite delay."""
    if not to:
        if after_s is not None:
            raise InvalidInputError(
                f"--escalate-after needs --escalate-to: name the team paged when team '{team}' "
                "does not acknowledge in time"
            )
        return {"escalate_to": None, "escalate_after_s": None}
    validate_name("team", to)
    if to == team:
        raise InvalidInputError(
            f"team '{team}' cannot escalate to itself; name a second team (e.g. --escalate-to "
            "platform)"
        )
    if after_s is None:
        raise InvalidInputError(
            f"escalation of team '{team}' to '{to}' needs a delay: pass --escalate-after 30m"
        )
    if isinstance(after_s, bool) or not isinstance(after_s, int | float):
        raise InvalidInputError(f"escalate_after_s must be a number of seconds, got {after_s!r}")
    if not math.isfinite(after_s) or after_s <= 0:
        raise InvalidInputError(
            f"escalation delay {after_s!r}s must be positive; pass e.g. --escalate-after 30m"
        )
    return {"escalate_to": to, "escalate_after_s": float(after_s)}


def _check_email(email: str | None) -> str | None:
    if email is None or email == "":
        return None
    if not _EMAIL.fullmatch(email):
        raise InvalidInputError(f"email '{email}' is not a valid address")
    return email


def _json_safe(value: Any) -> Any:
    """Params and metrics as JSON: numpy scalars unwrapped, objects shown by repr."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # JSON has no NaN or infinity; keep the fact as text
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return repr(value)


def git_commit(cwd: Path | None = None) -> str | None:
    """The current git commit (with '+dirty' when the tree has changes), or None outside a repo."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def require_team(conn: sa.Connection, name: str) -> sa.Row[Any]:
    """The row of team ``name``; NotFoundError naming the known teams if there is none."""
    row = conn.execute(sa.select(t.teams).where(t.teams.c.name == name)).first()
    if row is None:
        known = conn.execute(sa.select(t.teams.c.name).order_by(t.teams.c.name)).scalars().all()
        hint = f"known teams: {', '.join(known)}" if known else "no teams exist yet"
        raise NotFoundError(
            f"team '{name}' does not exist ({hint}); create it with 'ownloop team add {name}'"
        )
    return row


class Registry:
    """Registry operations; every change writes its audit row in the same transaction."""

    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        clock: Clock,
        actor: Actor | Acting,
        *,
        max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.clock = clock
        self.acting = Acting.of(actor)
        self.max_model_bytes = max_model_bytes

    # -- teams ----------------------------------------------------------------------------

    @property
    def actor(self) -> Actor:
        """Who acts now: the request's actor, else the workspace's."""
        return self.acting.actor

    @action("team.create")
    def add_team(
        self,
        name: str,
        *,
        email: str | None = None,
        webhook_url: str | None = None,
        slack_webhook_url: str | None = None,
        members: Sequence[str] = (),
        escalate_to: str | None = None,
        escalate_after_s: float | None = None,
    ) -> Team:
        """Create a team with its notification routes and where its unacknowledged pages go."""
        validate_name("team", name)
        self.acting.check("team.create", target=f"team:{name}")
        values: dict[str, Any] = {
            "email": _check_email(email),
            "webhook_url": _check_url("webhook", webhook_url),
            "slack_webhook_url": _check_url("Slack webhook", slack_webhook_url),
            **_check_escalation(name, escalate_to, escalate_after_s),
        }
        members = [validate_name("member", m) for m in members]
        try:
            self._insert_team(name, values, members)
        except ConcurrentChangeError as exc:  # another add_team of the same name won the race
            raise AlreadyExistsError(
                f"team '{name}' already exists (created a moment ago by another request); "
                f"see 'ownloop team show {name}'"
            ) from exc
        return self.get_team(name)

    def _insert_team(self, name: str, values: dict[str, Any], members: list[str]) -> None:
        now = self.clock.now()
        with self.store.write() as conn:
            if self._team_row(conn, name) is not None:
                raise AlreadyExistsError(
                    f"team '{name}' already exists; see 'ownloop team show {name}'"
                )
            if values.get("escalate_to"):
                self._require_team(conn, values["escalate_to"])
            team_id = conn.execute(
                t.teams.insert().values(
                    name=name, created_at=now, created_by=self.actor.name, **values
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            for m in dict.fromkeys(members):
                conn.execute(
                    t.team_members.insert().values(team_id=team_id, member=m, added_at=now)
                )
            self.store.audit(
                conn,
                at=now,
                actor=self.actor.name,
                action="team.create",
                target=f"team:{name}",
                after={**values, "members": list(dict.fromkeys(members))},
            )

    @action("team.update")
    def update_team(
        self,
        name: str,
        *,
        email: str | None = _UNSET,
        webhook_url: str | None = _UNSET,
        slack_webhook_url: str | None = _UNSET,
        escalate_to: str | None = _UNSET,
        escalate_after_s: float | None = _UNSET,
    ) -> Team:
        """Change a team's notification routes or escalation (pass None or '' to clear one).

        Clearing ``escalate_to`` clears the delay too; setting one needs the other (given here
        or already on the team).
        """
        changes: dict[str, Any] = {}
        if email is not _UNSET:
            changes["email"] = _check_email(email)
        if webhook_url is not _UNSET:
            changes["webhook_url"] = _check_url("webhook", webhook_url)
        if slack_webhook_url is not _UNSET:
            changes["slack_webhook_url"] = _check_url("Slack webhook", slack_webhook_url)
        self.acting.check("team.update", validate_name("team", name), target=f"team:{name}")
        now = self.clock.now()
        with self.store.write() as conn:
            row = self._require_team(conn, name)
            if escalate_to is not _UNSET or escalate_after_s is not _UNSET:
                changes.update(self._escalation_change(conn, row, escalate_to, escalate_after_s))
            before = {k: row._mapping[k] for k in changes}
            if changes:
                conn.execute(t.teams.update().where(t.teams.c.id == row.id).values(**changes))
            self.store.audit(
                conn,
                at=now,
                actor=self.actor.name,
                action="team.update",
                target=f"team:{name}",
                before=before,
                after=changes,
            )
        return self.get_team(name)

    def _escalation_change(
        self, conn: sa.Connection, row: sa.Row[Any], to: str | None, after_s: float | None
    ) -> dict[str, Any]:
        """The escalation columns after this update, checked against the stored ones."""
        target = row.escalate_to if to is _UNSET else to
        delay = row.escalate_after_s if after_s is _UNSET else after_s
        if not target:  # clearing the target clears the escalation
            if after_s is not _UNSET and after_s is not None and to is _UNSET:
                raise InvalidInputError(
                    f"team '{row.name}' escalates to no team; pass --escalate-to TEAM with "
                    "--escalate-after"
                )
            return {"escalate_to": None, "escalate_after_s": None}
        checked = _check_escalation(row.name, target, delay)
        self._require_team(conn, checked["escalate_to"])
        return checked

    @action("team.update")
    def add_member(self, team: str, member: str) -> Team:
        validate_name("member", member)
        self.acting.check("team.update", validate_name("team", team), target=f"team:{team}")
        try:
            self._insert_member(team, member)
        except ConcurrentChangeError as exc:  # the same member added by a concurrent request
            raise AlreadyExistsError(f"'{member}' is already a member of team '{team}'") from exc
        return self.get_team(team)

    def _insert_member(self, team: str, member: str) -> None:
        now = self.clock.now()
        with self.store.write() as conn:
            row = self._require_team(conn, team)
            exists = conn.execute(
                sa.select(t.team_members.c.member).where(
                    t.team_members.c.team_id == row.id, t.team_members.c.member == member
                )
            ).first()
            if exists:
                raise AlreadyExistsError(f"'{member}' is already a member of team '{team}'")
            conn.execute(
                t.team_members.insert().values(team_id=row.id, member=member, added_at=now)
            )
            self.store.audit(
                conn,
                at=now,
                actor=self.actor.name,
                action="team.member.add",
                target=f"team:{team}",
                after={"member": member},
            )

    @action("team.update")
    def remove_member(self, team: str, member: str) -> Team:
        validate_name("member", member)
        self.acting.check("team.update", validate_name("team", team), target=f"team:{team}")
        now = self.clock.now()
        with self.store.write() as conn:
            row = self._require_team(conn, team)
            deleted = conn.execute(
                t.team_members.delete().where(
                    t.team_members.c.team_id == row.id, t.team_members.c.member == member
                )
            ).rowcount
            if not deleted:
                raise NotFoundError(f"'{member}' is not a member of team '{team}'")
            self.store.audit(
                conn,
                at=now,
                actor=self.actor.name,
                action="team.member.remove",
                target=f"team:{team}",
                before={"member": member},
            )
        return self.get_team(team)

    @action("team.read")
    def get_team(self, name: str) -> Team:
        validate_name("team", name)
        self.acting.check("team.read", name, target=f"team:{name}")
        with self.store.read() as conn:
            row = self._require_team(conn, name)
            members = (
                conn.execute(
                    sa.select(t.team_members.c.member)
                    .where(t.team_members.c.team_id == row.id)
                    .order_by(t.team_members.c.member)
                )
                .scalars()
                .all()
            )
        return Team(
            row.name,
            row.email,
            row.webhook_url,
            row.slack_webhook_url,
            tuple(members),
            aware(row.created_at),
            row.created_by,
            escalate_to=row.escalate_to,
            escalate_after_s=row.escalate_after_s,
        )

    @action("team.read")
    def list_teams(self) -> list[Team]:
        self.acting.check("team.read", target="teams")
        with self.store.read() as conn:
            names = conn.execute(sa.select(t.teams.c.name).order_by(t.teams.c.name)).scalars().all()
        return [self.get_team(n) for n in names]

    def _team_row(self, conn: sa.Connection, name: str) -> sa.Row[Any] | None:
        return conn.execute(sa.select(t.teams).where(t.teams.c.name == name)).first()

    def _require_team(self, conn: sa.Connection, name: str) -> sa.Row[Any]:
        return require_team(conn, name)

    # -- models and versions ----------------------------------------------------------------

    @action("model.register")
    def register(
        self,
        model: Any = None,
        *,
        name: str,
        path: str | Path | None = None,
        owner: str | None = None,
        reference: pd.DataFrame | str | Path | None = None,
        target: str | None = None,
        signature: Signature | Mapping[str, Any] | str | Path | None = None,
        trust: Sequence[str] = (),
        allow_unsafe_pickle: bool = False,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        description: str | None = None,
        code_commit: str | None = None,
        requirements: str | Path | Sequence[str] | None = None,
    ) -> ModelVersion:
        """Store a model (a live object or a file) as the next version of ``name``.

        The feature names and types come from ``signature`` (a Signature, a dict or a JSON/YAML
        file), from ``reference`` data, or from the model itself when it records them; ownloop
        never guesses them. What the version needs to run is recorded as its ``needs``: library
        versions at training time, and ``requirements`` (a pip requirements file, or specifiers).

        >>> reg.register(clf, name="churn", owner="risk", reference=train_df, target="churned")  # doctest: +SKIP
        """
        validate_name("model", name)
        if owner is not None:
            validate_name("team", owner)
        self._check_owner(name, owner)
        required = _requirements(requirements)
        if (model is None) == (path is None):
            raise InvalidInputError(
                "pass exactly one of a model object or a model file path (path=)"
            )
        with progress.task(f"{name}: reading the model"):
            staged, fmt, trusted = self._stage_model(model, path, trust, allow_unsafe_pickle)
        try:
            return self._register_staged(
                staged,
                fmt,
                trusted,
                model,
                name=name,
                owner=owner,
                reference=reference,
                target=target,
                signature=signature,
                params=params,
                required=required,
                lineage={
                    "metrics": _json_safe(dict(metrics or {})),
                    "description": description,
                    "code_commit": code_commit if code_commit is not None else git_commit(),
                },
            )
        finally:
            staged.discard()  # gone already when committed; removes the copy otherwise

    def _register_staged(
        self,
        staged: Staged,
        fmt: str,
        trusted: list[str],
        model: Any,
        *,
        name: str,
        owner: str | None,
        reference: pd.DataFrame | str | Path | None,
        target: str | None,
        signature: Signature | Mapping[str, Any] | str | Path | None,
        params: Mapping[str, Any] | None,
        required: list[str],
        lineage: dict[str, Any],
    ) -> ModelVersion:
        # Load the staged bytes back (for a live object too): a version that cannot be loaded
        # must never be registered, and what was loaded is exactly what will be stored.
        loaded = load_model(
            staged.path.read_bytes(), fmt, trusted=trusted, allow_pickle=fmt in PICKLE_FORMATS
        )
        live = model if model is not None else loaded
        if not hasattr(live, "predict"):
            raise InvalidInputError(
                f"{type(live).__name__} has no predict method; it is not a model"
            )
        ref_frame, data_digest = self._reference(reference)
        if ref_frame is not None and target is not None and target not in ref_frame.columns:
            raise InvalidInputError(
                f"target column '{target}' is not in the reference data "
                f"(columns: {', '.join(map(str, ref_frame.columns))}); name the label column with target="
            )
        sig = infer_signature(live, ref_frame, target, signature)
        profile_digest = None
        if ref_frame is not None:
            with progress.task(f"{name}: profiling the reference", total=len(ref_frame)) as t:
                profile = compute_profile(live, ref_frame, sig)
                t.advance(len(ref_frame))
            profile_digest = self.artifacts.put_bytes(profile.to_bytes()).digest
        recorded = needs.record(live, fmt, artifact=staged.path, requirements=required)
        # The artifact is complete on disk before any row points at it: a crash here leaves at
        # most an unreferenced file, never a version without its artifact.
        with progress.task(f"{name}: storing the artifact"):
            artifact = self.artifacts.commit(staged)
        model_params = params if params is not None else _get_params(live)
        values = {
            "needs": recorded,
            "artifact_digest": artifact.digest,
            "artifact_format": fmt,
            "artifact_size": artifact.size,
            "trusted_types": list(trusted),
            "unsafe_pickle": fmt in PICKLE_FORMATS,
            "data_digest": data_digest,
            "params": _json_safe(dict(model_params)),
            "signature": sig.to_dict(),
            "profile_digest": profile_digest,
            "gate_status": "not_evaluated",
            **lineage,
        }
        number = self._insert_version(name, owner, values)
        return self.get_version(VersionRef(name, version=number))

    def _check_owner(self, name: str, owner: str | None) -> None:
        with self.store.read() as conn:
            row = self._model_row(conn, name)
            if row is None:
                if owner is None:
                    raise InvalidInputError(
                        f"model '{name}' is new and every model needs an owning team: pass "
                        "owner=TEAM (see 'ownloop team list', or create one with 'ownloop team add')"
                    )
                self._require_team(conn, owner)
                self.acting.check("model.register", owner, target=f"model:{name}")
                return
            current = row.owner
        if owner is not None and owner != current:
            raise ConflictError(
                f"model '{name}' is owned by team '{current}', not '{owner}'; to hand it over run "
                f"'ownloop transfer {name} --to {owner}'"
            )
        self.acting.check("model.register", current, target=f"model:{name}")

    def _stage_model(
        self, model: Any, path: str | Path | None, trust: Sequence[str], allow_pickle: bool
    ) -> tuple[Staged, str, list[str]]:
        """The model's bytes under a temporary name in the artifact store, with format and trust.

        A file is never read whole before its format is known: the header names it, pickles
        are refused before a byte is copied, and size limits hold while streaming.
        """
        if model is not None:
            raw = dump_skops(model)
            if len(raw) > self.max_model_bytes:
                raise PayloadTooLargeError(
                    f"the model saves to {len(raw):,} bytes, over the limit of "
                    f"{self.max_model_bytes:,} (OWNLOOP_MAX_MODEL_BYTES)"
                )
            # The person registering a live object created it: its types are trusted for this version.
            return self.artifacts.stage_bytes(raw), "skops", untrusted_types(raw)
        p = Path(str(path))
        if not p.exists():
            raise NotFoundError(f"model file {p} does not exist")
        if p.is_dir():
            raise InvalidInputError(f"{p} is a folder; pass the model file itself")
        fmt = sniff_format(read_header(p), p.name)
        if fmt in PICKLE_FORMATS and not allow_pickle:
            raise InvalidInputError(
                f"{p} is a {fmt} file, which runs arbitrary code when loaded; it was not loaded. "
                "Save the model with skops or ONNX, or pass allow_unsafe_pickle=True if you trust its source"
            )
        inlined = inline_onnx(p) if fmt == "onnx" else None  # external data, checked and included
        if inlined is not None and len(inlined) > self.max_model_bytes:
            raise PayloadTooLargeError(
                f"{p} with its external data is {len(inlined):,} bytes, over the limit of "
                f"{self.max_model_bytes:,} (OWNLOOP_MAX_MODEL_BYTES)"
            )
        if inlined is not None:
            staged = self.artifacts.stage_bytes(inlined)
        else:
            staged = self.artifacts.stage_file(p, self.max_model_bytes)
        try:
            if fmt == "zip":
                fmt = check_archive(staged.path, self.max_model_bytes, p.name)
        except BaseException:
            staged.discard()
            raise
        trusted = [validate_type_name(x) for x in trust] if fmt == "skops" else []
        return staged, fmt, sorted(set(trusted))

    def _reference(
        self, reference: pd.DataFrame | str | Path | None
    ) -> tuple[pd.DataFrame | None, str | None]:
        if reference is None:
            return None, None
        if isinstance(reference, pd.DataFrame):
            if reference.empty:
                raise InvalidInputError("the reference DataFrame has no rows")
            return reference, frame_digest(reference)
        frame = read_frame(reference)
        if frame.empty:
            raise InvalidInputError(f"reference file {reference} has no rows")
        return frame, file_digest(reference)

    def _insert_version(self, name: str, owner: str | None, values: dict[str, Any]) -> int:
        # Two first registrations of one model can both find no model row (PostgreSQL, READ
        # COMMITTED); the loser hits the unique name and simply tries again, finding the row.
        for _ in range(_RETRIES - 1):
            try:
                return self._insert_version_once(name, owner, values)
            except ConcurrentChangeError:
                continue
        try:
            return self._insert_version_once(name, owner, values)
        except ConcurrentChangeError as exc:
            raise ConcurrentChangeError(
                f"registering '{name}' kept colliding with concurrent registrations; try again"
            ) from exc

    def _insert_version_once(self, name: str, owner: str | None, values: dict[str, Any]) -> int:
        now = self.clock.now()
        with self.store.write() as conn:
            row = self._model_row(conn, name)
            if row is None:
                if owner is None:
                    raise InvalidInputError(f"model '{name}' is new: pass owner=TEAM")
                team = self._require_team(conn, owner)
                model_id = conn.execute(
                    t.models.insert().values(
                        name=name,
                        team_id=team.id,
                        latest_version=0,
                        created_at=now,
                        created_by=self.actor.name,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
                self.store.audit(
                    conn,
                    at=now,
                    actor=self.actor.name,
                    action="model.create",
                    target=f"model:{name}",
                    model=name,
                    after={"owner": owner},
                )
            else:
                model_id = row.id
            # The counter update row-locks the model on PostgreSQL (SQLite holds the write lock
            # since BEGIN IMMEDIATE); the unique constraint is the last line of defence.
            conn.execute(
                t.models.update()
                .where(t.models.c.id == model_id)
                .values(latest_version=t.models.c.latest_version + 1)
            )
            number = int(
                conn.execute(
                    sa.select(t.models.c.latest_version).where(t.models.c.id == model_id)
                ).scalar_one()
            )
            conn.execute(
                t.versions.insert().values(
                    model_id=model_id,
                    version=number,
                    created_at=now,
                    created_by=self.actor.name,
                    **values,
                )
            )
            self.store.audit(
                conn,
                at=now,
                actor=self.actor.name,
                action="version.register",
                target=f"{name}@{number}",
                model=name,
                after={
                    k: values[k]
                    for k in (
                        "artifact_digest",
                        "artifact_format",
                        "unsafe_pickle",
                        "data_digest",
                        "code_commit",
                    )
                },
            )
        return number

    def _model_row(self, conn: sa.Connection, name: str) -> sa.Row[Any] | None:
        return conn.execute(
            sa.select(t.models, t.teams.c.name.label("owner"))
            .join(t.teams, t.teams.c.id == t.models.c.team_id)
            .where(t.models.c.name == name)
        ).first()

    @action("model.read")
    def require_model_row(self, conn: sa.Connection, name: str) -> sa.Row[Any]:
        """The model's row (with its ``owner`` team) in the caller's transaction, or NotFoundError."""
        row = self._require_model(conn, validate_name("model", name))
        self.acting.check("model.read", row.owner, target=f"model:{name}")
        return row

    def _require_model(self, conn: sa.Connection, name: str) -> sa.Row[Any]:
        row = self._model_row(conn, name)
        if row is None:
            known = conn.execute(
                sa.select(t.models.c.name).order_by(t.models.c.name).limit(21)
            ).scalars()
            names = list(known)
            hint = (
                "no models are registered yet"
                if not names
                else "known models: " + ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            )
            raise NotFoundError(f"model '{name}' does not exist ({hint}); see 'ownloop models'")
        return row

    @action("model.read")
    def get_model(self, name: str) -> Model:
        validate_name("model", name)
        with self.store.read() as conn:
            row = self._require_model(conn, name)
            self.acting.check("model.read", row.owner, target=f"model:{name}")
            aliases = self._aliases(conn, row.id)
        return Model(
            row.name,
            row.owner,
            row.description,
            row.latest_version,
            aliases,
            aware(row.created_at),
            row.created_by,
        )

    @action("model.read")
    def list_models(self, owner: str | None = None) -> list[Model]:
        self.acting.check("model.read", owner, target="models")
        with self.store.read() as conn:
            query = (
                sa.select(t.models.c.name, t.teams.c.name.label("owner"))
                .join(t.teams, t.teams.c.id == t.models.c.team_id)
                .order_by(t.models.c.name)
            )
            if owner is not None:
                query = query.where(t.teams.c.name == owner)
            names = [r.name for r in conn.execute(query)]
        return [self.get_model(n) for n in names]

    def _aliases(self, conn: sa.Connection, model_id: int) -> dict[str, int]:
        rows = conn.execute(
            sa.select(t.aliases.c.alias, t.versions.c.version)
            .join(t.versions, t.versions.c.id == t.aliases.c.version_id)
            .where(t.aliases.c.model_id == model_id)
            .order_by(t.aliases.c.alias)
        )
        return {r.alias: r.version for r in rows}

    @action("model.read")
    def list_versions(self, name: str) -> list[ModelVersion]:
        validate_name("model", name)
        with self.store.read() as conn:
            model = self._require_model(conn, name)
            self.acting.check("model.read", model.owner, target=f"model:{name}")
            numbers = (
                conn.execute(
                    sa.select(t.versions.c.version)
                    .where(t.versions.c.model_id == model.id)
                    .order_by(t.versions.c.version)
                )
                .scalars()
                .all()
            )
        return [self.get_version(VersionRef(name, version=n)) for n in numbers]

    @action("model.read")
    def resolve(self, ref: str | VersionRef) -> VersionRef:
        """Turn ``churn``, ``churn@production`` or ``churn@3`` into an exact version reference."""
        return VersionRef(parse_ref(ref).model, version=self.get_version(ref).version)

    @action("model.read")
    def get_version(self, ref: str | VersionRef) -> ModelVersion:
        r = parse_ref(ref)
        with self.store.read() as conn:
            model = self._require_model(conn, r.model)
            self.acting.check("model.read", model.owner, target=f"model:{r.model}")
            aliases = self._aliases(conn, model.id)
            number = r.version
            if r.alias is not None:
                if r.alias not in aliases:
                    have = ", ".join(aliases) or "none"
                    raise NotFoundError(
                        f"model '{r.model}' has no alias '{r.alias}' (aliases: {have}); "
                        f"set one with 'ownloop alias set {r.model} {r.alias} VERSION'"
                    )
                number = aliases[r.alias]
            if number is None:
                number = model.latest_version
            row = conn.execute(
                sa.select(t.versions).where(
                    t.versions.c.model_id == model.id, t.versions.c.version == number
                )
            ).first()
            if row is None:
                raise NotFoundError(
                    f"model '{r.model}' has no version {number} (latest is {model.latest_version}); "
                    f"see 'ownloop versions {r.model}'"
                )
        return ModelVersion(
            model=r.model,
            version=row.version,
            owner=model.owner,
            artifact_digest=row.artifact_digest,
            artifact_format=row.artifact_format,
            artifact_size=row.artifact_size,
            trusted_types=tuple(row.trusted_types),
            unsafe_pickle=bool(row.unsafe_pickle),
            data_digest=row.data_digest,
            code_commit=row.code_commit,
            params=dict(row.params),
            metrics=dict(row.metrics),
            description=row.description,
            signature=Signature.from_dict(row.signature),
            profile_digest=row.profile_digest,
            gate_status=row.gate_status,
            aliases=tuple(a for a, v in aliases.items() if v == row.version),
            created_at=aware(row.created_at),
            created_by=row.created_by,
            needs=None if row.needs is None else dict(row.needs),
        )

    @action("model.read")
    def load(self, ref: str | VersionRef) -> Any:
        """The model object of a version, after verifying its artifact digest.

        >>> model = reg.load("churn@production")  # doctest: +SKIP
        """
        version = self.get_version(ref)
        data = self.artifacts.read(version.artifact_digest)
        return load_model(
            data,
            version.artifact_format,
            trusted=version.trusted_types,
            allow_pickle=version.unsafe_pickle,
            what=version.ref,
        )

    @action("model.read")
    def load_profile(self, ref: str | VersionRef) -> ReferenceProfile:
        version = self.get_version(ref)
        if version.profile_digest is None:
            raise NotFoundError(
                f"{version.ref} was registered without reference data, so it has no reference profile; "
                "register it again with reference data"
            )
        return ReferenceProfile.from_bytes(self.artifacts.read(version.profile_digest))

    # -- ownership ----------------------------------------------------------------------

    @action("model.transfer")
    def transfer(self, name: str, team: str) -> Model:
        """Hand a model over to another team (audited)."""
        validate_name("model", name)
        validate_name("team", team)
        self._check_model("model.transfer", name)
        now = self.clock.now()
        with self.store.write() as conn:
            model = self._require_model(conn, name)
            authorize(self.actor, "model.transfer", model.owner)  # the owner may have changed
            new = self._require_team(conn, team)
            if model.owner == team:
                raise ConflictError(f"model '{name}' is already owned by team '{team}'")
            conn.execute(t.models.update().where(t.models.c.id == model.id).values(team_id=new.id))
            self.store.audit(
                conn,
                at=now,
                actor=self.actor.name,
                action="model.transfer",
                target=f"model:{name}",
                model=name,
                before={"owner": model.owner},
                after={"owner": team},
            )
        return self.get_model(name)

    # -- aliases ------------------------------------------------------------------------

    @action("alias.set")
    def set_alias(self, name: str, alias: str, version: int | str) -> ModelVersion:
        """Point ``alias`` at a version; the move is kept in the alias history and the audit log.

        ``production`` is deploy's record of what is live, moved only through ``ws.deploy``.
        """
        validate_alias(alias)
        _refuse_reserved(name, alias, version)
        self._check_model("alias.set", validate_name("model", name))
        target = self.get_version(
            VersionRef(validate_name("model", name), version=version_number(version))
        )
        try:
            self._write_alias(name, alias, target.version)
        except ConcurrentChangeError:
            # A concurrent set_alias created the alias first; this one now moves it.
            self._write_alias(name, alias, target.version)
        return self.get_version(VersionRef(name, version=target.version))

    def _write_alias(self, name: str, alias: str, number: int) -> None:
        now = self.clock.now()
        with self.store.write() as conn:
            model = self._require_model(conn, name)
            authorize(self.actor, "alias.set", model.owner)  # the owner may have changed
            self.move_alias(conn, model, alias, number, now)

    @action("alias.set")
    def move_alias(
        self,
        conn: sa.Connection,
        model: sa.Row[Any],
        alias: str,
        number: int,
        now: datetime,
        *,
        audit: bool = True,
    ) -> int | None:
        """Point ``alias`` at version ``number`` inside the caller's transaction; the previous one.

        The caller has checked permission; deploy moves ``production`` through here, writing its
        own audit row (``audit=False``) that carries the evidence.
        """
        self.acting.check("alias.set", model.owner, target=f"{model.name}@{alias}")
        version_id = conn.execute(
            sa.select(t.versions.c.id).where(
                t.versions.c.model_id == model.id, t.versions.c.version == number
            )
        ).scalar_one()
        previous = self._aliases(conn, model.id).get(alias)
        if previous is None:
            conn.execute(
                t.aliases.insert().values(
                    model_id=model.id,
                    alias=alias,
                    version_id=version_id,
                    updated_at=now,
                    updated_by=self.actor.name,
                )
            )
        else:
            conn.execute(
                t.aliases.update()
                .where(t.aliases.c.model_id == model.id, t.aliases.c.alias == alias)
                .values(version_id=version_id, updated_at=now, updated_by=self.actor.name)
            )
        self._record_alias(conn, model.id, model.name, alias, number, previous, now, audit=audit)
        return previous

    @action("alias.delete")
    def delete_alias(self, name: str, alias: str) -> None:
        validate_name("alias", alias)
        if alias == PRODUCTION:
            raise ConflictError(
                f"'{PRODUCTION}' is what model '{name}' serves and only deploy moves it; "
                f"to stop a rollout run 'ownloop abort {name}', to go back 'ownloop rollback {name}'"
            )
        self._check_model("alias.delete", validate_name("model", name), target=f"{name}@{alias}")
        now = self.clock.now()
        with self.store.write() as conn:
            model = self._require_model(conn, name)
            authorize(self.actor, "alias.delete", model.owner)  # the owner may have changed
            previous = self._aliases(conn, model.id).get(alias)
            if previous is None:
                raise NotFoundError(f"model '{name}' has no alias '{alias}'")
            conn.execute(
                t.aliases.delete().where(
                    t.aliases.c.model_id == model.id, t.aliases.c.alias == alias
                )
            )
            self._record_alias(conn, model.id, name, alias, None, previous, now)

    def _record_alias(
        self,
        conn: sa.Connection,
        model_id: int,
        name: str,
        alias: str,
        version: int | None,
        previous: int | None,
        now: datetime,
        *,
        audit: bool = True,
    ) -> None:
        conn.execute(
            t.alias_history.insert().values(
                model_id=model_id,
                alias=alias,
                version=version,
                previous_version=previous,
                at=now,
                by=self.actor.name,
            )
        )
        if not audit:
            return
        self.store.audit(
            conn,
            at=now,
            actor=self.actor.name,
            action="alias.set" if version is not None else "alias.delete",
            target=f"{name}@{alias}",
            model=name,
            before=None if previous is None else {"version": previous},
            after=None if version is None else {"version": version},
        )

    @action("model.read")
    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        with self.store.read() as conn:
            model = self._require_model(conn, validate_name("model", name))
            self.acting.check("model.read", model.owner, target=f"model:{name}")
            query = sa.select(t.alias_history).where(t.alias_history.c.model_id == model.id)
            if alias is not None:
                query = query.where(t.alias_history.c.alias == alias)
            rows = conn.execute(query.order_by(t.alias_history.c.id)).all()
        return [AliasEvent(r.alias, r.version, r.previous_version, aware(r.at), r.by) for r in rows]

    def _check_model(self, action: str, name: str, *, target: str | None = None) -> str:
        """Check ``action`` on model ``name`` against its owner now, before a write transaction
        opens (a denial is audited in a transaction of its own); returns that owner."""
        with self.store.read() as conn:
            owner: str = self._require_model(conn, name).owner
        self.acting.check(action, owner, target=target or f"model:{name}")
        return owner

    # -- audit --------------------------------------------------------------------------

    @action("audit.read")
    def audit_log(self, model: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first: who changed what, when."""
        self.acting.check("audit.read", target="audit" if model is None else f"model:{model}")
        query = sa.select(t.audit).order_by(t.audit.c.id.desc()).limit(limit)
        if model is not None:
            query = query.where(t.audit.c.model == validate_name("model", model))
        with self.store.read() as conn:
            if model is not None:
                self._require_model(conn, model)
            rows = conn.execute(query).all()
        return [
            AuditEntry(aware(r.at), r.actor, r.action, r.target, r.model, r.before, r.after)
            for r in rows
        ]


def _requirements(requirements: str | Path | Sequence[str] | None) -> list[str]:
    """Requirement specifiers from a requirements file (a path) or given as strings."""
    if requirements is None:
        return []
    if isinstance(requirements, str | Path):
        return needs.read_requirements(requirements)
    return needs.parse_requirements(requirements, "requirements=")


def _refuse_reserved(name: str, alias: str, version: int | str) -> None:
    if alias == PRODUCTION:
        raise ConflictError(
            f"'{PRODUCTION}' is what model '{name}' serves and only deploy moves it, after "
            f"checking the gate: run 'ownloop deploy {name}@{version}' (or 'ownloop alias set "
            f"{name} {PRODUCTION} {version} --force --reason TEXT' to override, audited)"
        )


def version_number(version: int | str) -> int:
    """A version number given as an int or text (``"3"``), or InvalidInputError."""
    if isinstance(version, int) and version > 0:
        return version
    if isinstance(version, str) and version.isascii() and version.isdigit() and int(version) > 0:
        return int(version)
    raise InvalidInputError(f"version must be a positive whole number, not {version!r}")


def validate_type_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][\w.]*", name):
        raise InvalidInputError(f"'{name}' is not a Python type path like sklearn.module.ClassName")
    return name


def _get_params(model: Any) -> Mapping[str, Any]:
    """``get_params(deep=True)`` keeping plain values (a pipeline's nested objects are left out)."""
    get_params = getattr(model, "get_params", None)
    if get_params is None:
        return {}
    params: Mapping[str, Any] = get_params(deep=True)
    plain = (bool, int, float, str, type(None), np.generic)
    return {
        k: v
        for k, v in params.items()
        if isinstance(v, plain)
        or (isinstance(v, list | tuple) and all(isinstance(x, plain) for x in v))
    }
