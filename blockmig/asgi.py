import os

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blockmig.settings")
django_asgi_app = get_asgi_application()
if settings.BLOCKMIG_SERVE_STATIC:
    # daphne serves no static files itself; one machine (make run) has no proxy in front.
    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from channels.auth import AuthMiddleware  # noqa: E402  (needs the app registry)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import CookieMiddleware, SessionMiddleware  # noqa: E402

from blockmig.live.handshake import HandshakeGate  # noqa: E402
from blockmig.live.origin import OriginValidator  # noqa: E402
from blockmig.routing import websocket_urlpatterns  # noqa: E402

# Websockets, outside in: the Origin (scheme, host and port) before anything is read; a
# logged-in session, the per-user cap and turns (the session lookup and one Redis call,
# before the user or the page is read); then channels' session and user, and the consumer.
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginValidator(
            CookieMiddleware(HandshakeGate(SessionMiddleware(AuthMiddleware(URLRouter(websocket_urlpatterns)))))
        ),
    }
)
