"""The text-to-SQL task's SQLite database: four related tables, a few hundred rows, built
deterministically from a seed.

    cities(name, country)              21 rows
    customers(id, name, city, age)     160 rows   city -> cities.name
    products(id, name, category, price) 41 rows   prices all distinct (no ties when ordering)
    orders(id, customer_id, product_id, quantity, year)  600 rows
"""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

from task_gen.vocab import CITIES, FIRST_NAMES, LAST_NAMES, PRODUCTS

N_CUSTOMERS = 160
N_ORDERS = 600
YEARS = tuple(range(2018, 2025))
# price range per category (whole euros: no decimals for the model to copy)
PRICE_RANGE = {"Electronics": (25, 1500), "Furniture": (20, 1200), "Kitchen": (10, 300),
               "Garden": (5, 600), "Sports": (8, 260), "Books": (5, 70)}

DDL = (
    "CREATE TABLE cities (name TEXT PRIMARY KEY, country TEXT NOT NULL)",
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " city TEXT NOT NULL REFERENCES cities(name), age INTEGER NOT NULL)",
    "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " category TEXT NOT NULL, price INTEGER NOT NULL)",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY,"
    " customer_id INTEGER NOT NULL REFERENCES customers(id),"
    " product_id INTEGER NOT NULL REFERENCES products(id),"
    " quantity INTEGER NOT NULL, year INTEGER NOT NULL)",
)

# What the model sees as `input`: one line per table, column names only (short prompts).
SCHEMA = "\n".join((
    "cities(name, country)",
    "customers(id, name, city, age)",
    "products(id, name, category, price)",
    "orders(id, customer_id, product_id, quantity, year)",
))


def make_rows(rng: random.Random) -> dict[str, list[tuple]]:
    """All table rows, drawn from `rng` (same seed -> same rows)."""
    cities = sorted(CITIES.items())
    names = rng.sample([f"{f} {l}" for f in FIRST_NAMES for l in LAST_NAMES], N_CUSTOMERS)
    city_names = [c for c, _ in cities]
    customers = [(i + 1, n, rng.choice(city_names), rng.randint(18, 79)) for i, n in enumerate(names)]
    products, used = [], set()
    for category, items in PRODUCTS.items():
        lo, hi = PRICE_RANGE[category]
        for item in items:
            price = rng.randint(lo, hi)
            while price in used:  # distinct prices: "the cheapest" always has one answer
                price = rng.randint(lo, hi)
            used.add(price)
            products.append((len(products) + 1, item, category, price))
    orders = [(i + 1, rng.randint(1, len(customers)), rng.randint(1, len(products)),
               rng.randint(1, 5), rng.choice(YEARS)) for i in range(N_ORDERS)]
    return {"cities": cities, "customers": customers, "products": products, "orders": orders}


def write_db(path: Path, rows: dict[str, list[tuple]]) -> None:
    """Create the database at `path` (replacing it atomically: temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("BEGIN")
        for ddl in DDL:
            conn.execute(ddl)
        for table, table_rows in rows.items():
            marks = ", ".join("?" * len(table_rows[0]))
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})", table_rows)
        conn.execute("COMMIT")
        conn.execute("VACUUM")  # compact, and the same bytes for the same rows
    finally:
        conn.close()
    os.replace(tmp, path)


def build_db(path: Path, rng: random.Random) -> dict[str, list[tuple]]:
    rows = make_rows(rng)
    write_db(path, rows)
    return rows
