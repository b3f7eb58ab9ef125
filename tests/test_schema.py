"""The database the migrations build is exactly the schema declared in store/_schema.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ownloop.store import Store, tables


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases on the same backend: one for the migrations, one for create_all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.db'}", f"sqlite:///{tmp_path / 'declared.db'}"
        return
    admin_url: str = request.getfixturevalue("pg_admin_url")
    admin = sa.create_engine(admin_url)
    schemas = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with admin.begin() as conn:
        for schema in schemas:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    urls = [
        make_url(admin_url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
        for schema in schemas
    ]
    try:
        yield urls[0], urls[1]
    finally:
        with admin.begin() as conn:
            for schema in schemas:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _shape(url: str) -> dict[str, Any]:
    """Tables, columns (type, nullability, key), indexes, unique constraints and foreign keys."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        shape: dict[str, Any] = {}
        for name in sorted(inspector.get_table_names()):
            shape[name] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)
                ],
                "primary_key": inspector.get_pk_constraint(name)["constrained_columns"],
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(name)
                ),
                "unique": sorted(
                    tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)
                ),
                "foreign_keys": sorted(
                    (
                        tuple(f["constrained_columns"]),
                        f["referred_table"],
                        tuple(f["referred_columns"]),
                    )
                    for f in inspector.get_foreign_keys(name)
                ),
            }
        return shape
    finally:
        engine.dispose()


def test_migrated_database_equals_the_declared_schema(two_databases: tuple[str, str]) -> None:
    migrated, declared = two_databases
    with Store(migrated):  # a fresh database is built by running every migration
        pass
    engine = sa.create_engine(declared)
    try:
        tables.metadata.create_all(engine)
    finally:
        engine.dispose()
    built, wanted = _shape(migrated), _shape(declared)
    assert sorted(built) == sorted(wanted)
    for name in wanted:
        assert built[name] == wanted[name], name
    # The comparison covers something: every declared table, and the indexes the queries need.
    assert set(wanted) == {t.name for t in tables.metadata.sorted_tables}
    assert any(shape["indexes"] for shape in wanted.values())
