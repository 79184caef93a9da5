#!/usr/bin/env python3
"""A hawkBit DDI server for bench/fleet.sh: any controller id, written from
hawkBit's behaviour (not a test stand-in of ours): the root answer carries
config.polling.sleep and links, every answer but a download carries an ETag of
its body ("0" + MD5, Spring's ShallowEtagHeaderFilter) and a matching
If-None-Match gets 304; a closing feedback ends the action. It logs one line per
root poll (monotonic time, controller, status) to the file given, and is
controlled by files in its folder: `down` (answer 503 to everything),
`rollout` (offer one deployment to every controller).

    fleet_server.py PORT DIR SLEEP_HHMMSS
"""
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, DIR, SLEEP = int(sys.argv[1]), sys.argv[2], sys.argv[3]
IMAGE = b"fleet image 2.0 " * 4096
SHA256 = hashlib.sha256(IMAGE).hexdigest()
LOCK = threading.Lock()
LOG = open(os.path.join(DIR, "polls.log"), "a", buffering=1)
CLOSED = {}  # controller -> "success" | "failure"


def flag(name):
    return os.path.exists(os.path.join(DIR, name))


class Ddi(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, body=b"", kind="application/json", etag=None):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)

    def json(self, value):
        """Answers `value`; returns the status (304 when If-None-Match matched)."""
        body = json.dumps(value).encode()
        etag = '"0' + hashlib.md5(body).hexdigest() + '"'
        if self.headers.get("If-None-Match") == etag:
            self.answer(304, etag=etag)
            return 304
        self.answer(200, body, etag=etag)
        return 200

    def parts(self):
        p = self.path.split("?")[0].strip("/").split("/")
        # DEFAULT/controller/v1/<id>[/...]
        return (p[3], p[4:]) if len(p) >= 4 and p[1] == "controller" else (None, p)

    def base(self):
        return "http://%s" % self.headers.get("Host")

    def do_GET(self):
        if flag("down"):
            return self.answer(503)
        ctrl, rest = self.parts()
        if ctrl is None and rest[:1] == ["download"]:
            return self.answer(200, IMAGE, "application/octet-stream")
        if ctrl is None:
            return self.answer(404)
        root = "%s/DEFAULT/controller/v1/%s" % (self.base(), ctrl)
        offered = flag("rollout") and ctrl not in CLOSED
        if not rest:
            links = {}
            if offered:
                links["deploymentBase"] = {"href": root + "/deploymentBase/1"}
            code = self.json({"config": {"polling": {"sleep": SLEEP}}, "_links": links})
            with LOCK:
                LOG.write("%.3f %s poll %d\n" % (time.monotonic(), ctrl, code))
            return None
        if rest[0] == "deploymentBase" and offered:
            return self.json({"id": "1", "deployment": {
                "download": "forced", "update": "forced",
                "chunks": [{"part": "os", "version": "2.0.0", "name": "fleet", "artifacts": [{
                    "filename": "fleet-2.0.bin", "size": len(IMAGE),
                    "hashes": {"sha256": SHA256},
                    "_links": {"download-http": {"href": self.base() + "/download/fleet-2.0.bin"}}}]}]}})
        self.answer(404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if flag("down"):
            return self.answer(503)
        ctrl, rest = self.parts()
        if ctrl and rest[-1:] == ["feedback"]:
            status = body.get("status", {})
            if status.get("execution") == "closed":
                with LOCK:
                    CLOSED[ctrl] = status.get("result", {}).get("finished")
                    LOG.write("%.3f %s closed %s\n" % (time.monotonic(), ctrl, CLOSED[ctrl]))
            return self.answer(200)
        self.answer(404)

    def do_PUT(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.answer(503 if flag("down") else 200)


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer(("127.0.0.1", PORT), Ddi).serve_forever()
