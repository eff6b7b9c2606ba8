"""Workspaces and API keys: who is calling, and what they may do."""

from __future__ import annotations

from synchook.auth.models import ALL_SCOPES, ApiKey, Principal, Workspace

__all__ = ["ALL_SCOPES", "ApiKey", "Principal", "Workspace"]
