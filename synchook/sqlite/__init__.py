"""The SQLite adapter: everything Synchook does differently when the database is one SQLite file."""
