"""SQLAlchemy's sync Engine and Session against real servers; the asyncio extension never flagged."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from _services import MySQLInfo, PostgresInfo
from helpers import call_on, marked_line
from sqlalchemy import ForeignKey, String, create_engine, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.engine.base import Connection
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

import blockbuster_lite as bl


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "bl_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    addresses: Mapped[list[Address]] = relationship(back_populates="user")


class Address(Base):
    __tablename__ = "bl_addresses"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[int] = mapped_column(ForeignKey("bl_users.id"))
    user: Mapped[User] = relationship(back_populates="addresses")


line_of = functools.partial(marked_line, __file__)


def logged(call: Callable[[], Any]) -> tuple[Any, list[bl.Violation]]:
    with bl.intercept("log") as guard:
        result = call_on("asyncio", call)
    return result, guard.violations


def pg_url(postgres: PostgresInfo, driver: str) -> str:
    return postgres.url.replace("postgresql://", f"postgresql+{driver}://", 1)


@pytest.fixture(scope="module")
def engine(postgres: PostgresInfo) -> Iterator[Engine]:
    engine = create_engine(pg_url(postgres, "psycopg2"))
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(User(id=1, name="ada", addresses=[Address(email="ada@example.com")]))
        session.commit()
    try:
        yield engine
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


def test_session_queries_name_the_statement_and_the_driver(engine: Engine) -> None:
    session = Session(engine)

    def query() -> Any:
        return session.scalars(select(User).where(User.name == "ada")).one()  # flag: scalars

    user, violations = logged(query)
    assert user.name == "ada"
    [violation] = violations  # the driver's own calls underneath are not reported again
    assert violation.call == (
        "sqlalchemy.orm.Session.scalars(SELECT ...) via psycopg2"
    )
    assert (violation.filename, violation.lineno) == (__file__, line_of("flag: scalars"))
    assert "Blocking call to sqlalchemy.orm.Session.scalars(SELECT" in violation.message
    assert "AsyncEngine" in violation.message and "ada" not in violation.call

    def orm_work() -> Any:
        same = session.get(User, 1)  # in the identity map: no query
        user.name = "ada lovelace"
        session.flush()  # flag: flush
        emails = [a.email for a in user.addresses]  # flag: lazy load
        session.rollback()  # flag: rollback
        session.rollback()  # nothing to roll back any more
        return same, emails

    (same, emails), violations = logged(orm_work)
    assert same is user and emails == ["ada@example.com"]
    assert [(v.call.split("(")[0].split(" via")[0], v.lineno) for v in violations] == [
        ("sqlalchemy.orm.Session.flush", line_of("flag: flush")),
        ("sqlalchemy.orm.Session.execute", line_of("flag: lazy load")),
        ("sqlalchemy.orm.Session.rollback", line_of("flag: rollback")),
    ]
    session.close()


def test_core_connection_and_engine(postgres: PostgresInfo) -> None:
    engine = create_engine(pg_url(postgres, "psycopg2"))
    try:

        def core() -> Any:
            with engine.connect() as conn:  # flag: connect
                value = conn.execute(text("select pg_sleep(0.01), 5")).one()  # flag: execute
                conn.commit()  # flag: commit
                conn.commit()  # no transaction any more: not reported
            with engine.connect() as conn:  # an idle pooled connection: not reported
                value2 = conn.exec_driver_sql("select 6").scalar()  # flag: driver sql
            return value, value2

        result, violations = logged(core)
        assert result == (("", 5), 6)
        assert [(v.call, v.lineno) for v in violations] == [
            ("sqlalchemy.Engine.connect via psycopg2", line_of("flag: connect")),
            ("sqlalchemy.Connection.execute(SELECT ...) via psycopg2",
             line_of("flag: execute")),
            ("sqlalchemy.Connection.commit via psycopg2", line_of("flag: commit")),
            ("sqlalchemy.Connection.exec_driver_sql(SELECT ...) via psycopg2",
             line_of("flag: driver sql")),
            # the pool rolls the connection back when it is returned: a real round trip
            ("psycopg2.connection.rollback", line_of("flag: driver sql") - 1),
        ]  # fmt: skip
    finally:
        engine.dispose()


def test_raise_mode_refuses_before_the_driver_is_called(engine: Engine) -> None:
    with engine.connect() as conn:
        with bl.intercept("raise"):

            def execute() -> None:
                conn.execute(text("select 1"))

            with pytest.raises(bl.BlockingCallError) as info:
                call_on("asyncio", execute)
        assert info.value.violation.call == "sqlalchemy.Connection.execute(SELECT ...) via psycopg2"
        assert not conn.in_transaction()
        assert conn.execute(text("select 2")).scalar() == 2


def test_through_pymysql(mariadb: MySQLInfo) -> None:
    engine = create_engine(mariadb.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
            _, violations = logged(lambda: conn.execute(text("select sleep(0.01)")).scalar())
            assert [v.call for v in violations] == [
                "sqlalchemy.Connection.execute(SELECT ...) via pymysql"
            ]
    finally:
        engine.dispose()


def test_the_asyncio_extension_is_never_flagged(postgres: PostgresInfo, engine: Engine) -> None:
    async def main() -> list[Any]:
        async_engine = create_async_engine(pg_url(postgres, "psycopg"))
        try:
            async with AsyncSession(async_engine) as session:
                user = await session.get(User, 1)
                assert user is not None
                names = list(await session.scalars(select(User.name)))
                user.name = "ada"
                await session.commit()
                await session.refresh(user, ["addresses"])
                names.append(user.addresses[0].email)
                names.append(await session.run_sync(lambda s: s.execute(select(User.id)).scalar()))
            async with async_engine.connect() as conn:
                names.append(await conn.scalar(text("select pg_sleep(0.01), 'x'")))
                await conn.commit()
            return names
        finally:
            await async_engine.dispose()

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == ["ada", "ada@example.com", 1, ""]
    assert guard.violations == []


def test_clean_under_a_worker_thread(engine: Engine) -> None:
    def work() -> Any:
        with Session(engine) as session:
            return session.scalar(select(User.name).where(User.id == 1))

    async def main() -> Any:
        return await anyio.to_thread.run_sync(work)

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == "ada"
    assert guard.violations == []


def test_restored_after_the_guard() -> None:
    classes = (Session, Connection, Engine)
    before = {cls: dict(vars(cls)) for cls in classes}
    with bl.intercept("raise"):
        assert vars(Session)["execute"] is not before[Session]["execute"]
    for cls in classes:
        after = vars(cls)
        assert after.keys() == before[cls].keys()
        assert all(after[name] is value for name, value in before[cls].items()), cls
