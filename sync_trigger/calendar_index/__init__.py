"""The calendar index: the calendars and events each connection's syncs brought in, and their sync cursors."""
