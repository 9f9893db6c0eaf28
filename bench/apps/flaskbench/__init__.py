"""The Flask workloads of bench/run (bench/README.md): the same app code for every server.

    /flask/api   a JSON API: 10 rows of the bench SQLite table (the Django workload's database,
                 apps/djangobench/bench.sqlite3) queried with the sqlite3 module and serialised
                 by Flask's JSON provider
    /flask/page  a Jinja page: a template that extends a base layout and renders 50 products
                 from memory with filters and a macro, no database (pure Python work, so it never
                 lets the GIL go inside the app)

Like Django's, the SQLite connection is one per thread, opened read-only and kept across
requests, as a real app would.
"""

import os
import sqlite3
import threading

from flask import Flask, jsonify, render_template

HERE = os.path.dirname(os.path.abspath(__file__))
DB_PATH = os.path.join(os.path.dirname(HERE), "djangobench", "bench.sqlite3")

app = Flask(__name__)
_local = threading.local()

PRODUCTS = [
    {"id": i, "name": f"product number {i}", "price": (i * 7919) % 10007,
     "tags": ["new", "sale", "eco"][: 1 + i % 3], "stock": (i * 31) % 17}
    for i in range(1, 51)
]


def _db():
    db = getattr(_local, "db", None)
    if db is None:
        db = _local.db = sqlite3.connect(f"file:{DB_PATH}?mode=ro", uri=True,
                                         check_same_thread=False)
        db.row_factory = sqlite3.Row
    return db


@app.route("/flask/api")
def api():
    rows = _db().execute(
        "SELECT id, name, price FROM djangobench_item WHERE price >= ? ORDER BY price, id LIMIT 10",
        (5000,),
    ).fetchall()
    items = [{"id": r["id"], "name": r["name"], "price_eur": r["price"] / 100} for r in rows]
    return jsonify({"count": len(items), "items": items, "currency": "EUR"})


@app.route("/flask/page")
def page():
    return render_template("products.html", title="Products", products=PRODUCTS)
