"""A tiny HTTP backend for e2e tests: answers every GET with the X-SSL-* headers nginx passed on."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        body = json.dumps({"backend": "echo", "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-")}})
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Echo).serve_forever()
