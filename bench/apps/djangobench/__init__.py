"""A tiny Django project for the `django` workload (bench/README.md).

One view renders a template from a small SQLite query, the shape of a typical database-backed
page. bench/apps/router.py routes /django to it, so every server runs the same Django code.
The database is made by `make_db.py` (standard library only) before a run and opened read-only.
"""
