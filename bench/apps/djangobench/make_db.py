"""Create bench.sqlite3 for the Django workload with the standard library (no Django needed).

The table is the one Django's migration for models.Item would create; the rows are fixed so
every run and every server renders the same page. Idempotent: rewrites the file each time.
"""

import os
import sqlite3
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = 200


def make(path=os.path.join(HERE, "bench.sqlite3")):
    tmp = path + ".tmp"
    if os.path.exists(tmp):
        os.remove(tmp)
    db = sqlite3.connect(tmp)
    db.execute(
        "CREATE TABLE djangobench_item (id integer NOT NULL PRIMARY KEY AUTOINCREMENT, "
        "name varchar(40) NOT NULL, price integer NOT NULL)"
    )
    db.execute("CREATE INDEX djangobench_item_price ON djangobench_item (price)")
    db.executemany(
        "INSERT INTO djangobench_item (id, name, price) VALUES (?, ?, ?)",
        [(i, f"item number {i}", (i * 7919) % 10007) for i in range(1, ROWS + 1)],
    )
    db.commit()
    db.close()
    os.chmod(tmp, 0o644)  # the servers read it as www-data
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    print(make(*sys.argv[1:]))
