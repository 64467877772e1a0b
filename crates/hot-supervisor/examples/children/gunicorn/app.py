"""A WSGI app for gunicorn, which supports socket activation itself.

    supervisor -l 127.0.0.1:8080 --ready notify -- gunicorn --chdir examples/children/gunicorn app:app

gunicorn takes fd 3 when LISTEN_PID is its own pid, sends READY=1 once its
arbiter has booted, and drains on TERM (its workers finish their requests
within --graceful-timeout). Nothing here knows about the supervisor.
"""
import os


def app(environ, start_response):
    body = f"generation {os.environ.get('SUPERVISOR_GENERATION', '0')} pid {os.getpid()}\n"
    body = body.encode()
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]
