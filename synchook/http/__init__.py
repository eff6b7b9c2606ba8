"""The HTTP kernel: envelope, request ids, auth guard, body parsing, pagination."""
