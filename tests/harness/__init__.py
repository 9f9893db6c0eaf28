"""End-to-end test harness: start Debian's real nginx and Apache and rwsgi-worker on free 127.0.0.1
ports from temporary prefixes, and talk to them (HTTP via `requests`, uwsgi via raw sockets).

Everything here is plain Python with no pytest dependency, so scripts can reuse it too; the
pytest fixtures that wrap it live in tests/conftest.py.
"""
