"""Interoperability with Node's express-session: app.js (Express) and wsgi_app.py (Python) share one Redis."""
