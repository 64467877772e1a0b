"""An ASGI app for hypercorn, which takes the supervisor's socket with --bind fd://N.

    supervisor -l 127.0.0.1:8080 --ready http:/ --chdir examples/children/hypercorn \
        -- hypercorn --bind fd://3 app:app

hypercorn takes the listener from `--bind fd://3` (`socket.socket(fileno=3)`;
it reads no LISTEN_* variable), sends no READY=1 (so --ready http:/ probes
it through the new generation's own socket), and drains on TERM or INT
(its workers finish within --graceful-timeout, 3 s by default). On its
drain it closes idle keep-alive connections at once.
"""
import os

BODY = f"generation {os.environ.get('SUPERVISOR_GENERATION', '0')} pid {os.getpid()}\n".encode()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": BODY})
