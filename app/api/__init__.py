"""HTTP layer: routers, auth, the error envelope and the request middleware."""

from app.api import admin, health, track
from app.api.errors import install_error_handlers
from app.api.middleware import RequestContextMiddleware

__all__ = ["RequestContextMiddleware", "admin", "health", "install_error_handlers", "track"]
