//! The uwsgi wire protocol.
