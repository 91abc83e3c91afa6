"""AUTH: accounts, passwords, access and refresh tokens."""

from __future__ import annotations

from kintsugi_rt.auth.routes import routes
from kintsugi_rt.auth.service import AuthService, Principal

__all__ = ["AuthService", "Principal", "routes"]
