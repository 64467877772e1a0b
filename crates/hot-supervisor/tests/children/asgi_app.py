"""A tiny ASGI application for the uvicorn test of tests/steer.rs: every
request is answered with `generation <G> pid <PID>`.

    uvicorn --fd 3 --app-dir tests/children asgi_app:app
"""
import os

BODY = f"generation {os.environ.get('SUPERVISOR_GENERATION', '0')} pid {os.getpid()}\n".encode()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": BODY})
