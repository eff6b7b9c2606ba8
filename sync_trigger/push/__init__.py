"""Provider push (CONTRACT §7): channels per calendar, inbound notifications, debounced push syncs."""
