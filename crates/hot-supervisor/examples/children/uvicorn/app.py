"""An ASGI app for uvicorn, which takes the supervisor's socket with --fd.

    supervisor -l 127.0.0.1:8080 --ready http:/ --chdir examples/children/uvicorn \
        -- uvicorn --fd 3 app:app

uvicorn takes the listener from `--fd 3` (it reads no LISTEN_* variable),
sends no READY=1 (so --ready http:/ probes it through the new generation's
own socket), and drains on TERM or INT, then re-raises the signal (the
supervisor counts a death by the stop signal it sent as a clean stop).
On its drain it closes idle keep-alive connections at once.
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
