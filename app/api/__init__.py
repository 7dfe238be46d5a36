"""HTTP layer: routers, auth, the error envelope and the request middleware."""

from app.api import health, track
from app.api.errors import install_error_handlers
from app.api.middleware import RequestContextMiddleware

__all__ = ["RequestContextMiddleware", "health", "install_error_handlers", "track"]
