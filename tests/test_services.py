"""The real test servers start and answer."""

from __future__ import annotations

import psycopg2
import pymysql
import redis
from _services import MySQLInfo, PostgresInfo, RedisInfo


def test_postgres_answers(postgres: PostgresInfo) -> None:
    conn = psycopg2.connect(postgres.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("select 1, current_database()")
            assert cur.fetchone() == (1, postgres.dbname)
    finally:
        conn.close()


def test_redis_answers(redis_server: RedisInfo) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_mariadb_answers(mariadb: MySQLInfo) -> None:
    conn = pymysql.connect(**mariadb.connect_kwargs)
    try:
        with conn.cursor() as cur:
            cur.execute("select 1, database()")
            assert cur.fetchone() == (1, mariadb.database)
    finally:
        conn.close()
