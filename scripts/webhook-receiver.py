"""A webhook receiver for Ferry's tests: verifies every delivery with the
`standardwebhooks` package from PyPI (an implementation independent of
Ferry's) and keeps what it received.

    python webhook-receiver.py --port PORT --secret whsec_... [--fail-first N] [--hang]

POST any path: the delivery is verified (a bad signature answers 400);
each webhook-id's first N tries answer 500 on purpose, the later ones 204.
With --hang, every POST is accepted and never answered. PUT /config with
{"fail_first": N, "hang": bool} changes that. GET /received answers the
list of deliveries: {webhook_id, timestamp, verified, error, body, at}.
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

LOCK = threading.Lock()
RECEIVED = []
TRIES = {}
CONFIG = {"fail_first": 0, "hang": False}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        length = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(length)

    def do_GET(self):
        with LOCK:
            body = json.dumps(RECEIVED).encode()
        self.answer(200, body)

    def do_PUT(self):
        update = json.loads(self.read_body() or b"{}")
        with LOCK:
            CONFIG.update(update)
        self.answer(204)

    def do_POST(self):
        body = self.read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        record = {
            "webhook_id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "headers": headers,
            "verified": False,
            "error": None,
            "body": None,
            "at": time.time(),
        }
        try:
            record["body"] = self.server.verifier.verify(body, headers)
            record["verified"] = True
        except Exception as error:  # the library's verification errors
            record["error"] = f"{type(error).__name__}: {error}"
        with LOCK:
            RECEIVED.append(record)
            tries = TRIES.get(record["webhook_id"], 0) + 1
            TRIES[record["webhook_id"]] = tries
            fail_first, hang = CONFIG["fail_first"], CONFIG["hang"]
        if not record["verified"]:
            self.answer(400)
        elif hang:
            time.sleep(3600)
        elif tries <= fail_first:
            self.answer(500, b'{"error": "failing on purpose"}')
        else:
            self.answer(204)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--hang", action="store_true")
    args = parser.parse_args()
    CONFIG["fail_first"] = args.fail_first
    CONFIG["hang"] = args.hang
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.verifier = Webhook(args.secret)
    server.serve_forever()


if __name__ == "__main__":
    main()
