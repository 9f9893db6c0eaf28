//! WSGI host.
