"""A loopback Ollama server for the tests of harmref/ollama.py and its two users (Llama Guard, the LLM judge).

It speaks the parts of Ollama's HTTP API harmref uses (/api/tags, /api/generate, /api/chat) and
plays one fault per path on request: `server.faults = {"/api/generate": "trickle"}`. Faults:
http500, badjson (a body that is not JSON), nofield (JSON without the reply field), drop (the
connection closes mid-body), stall (headers, then nothing), trickle (one byte every 0.3 s).
`server.reply` overrides the verdict text of /api/generate (for the strict-verdict tests).
"""

from __future__ import annotations

import json
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UNSAFE_WORDS = ("bomb", "poison", "malware")
FAULTS = ("http500", "badjson", "nofield", "drop", "stall", "trickle")


class Handler(BaseHTTPRequestHandler):
    models = ("llama-guard3:8b", "judge:1b")

    def _send(self, obj, status=200):
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _fault(self, fault: str, ok: dict):
        body = json.dumps(ok).encode()
        if fault == "http500":
            return self._send({"error": "llama runner process has terminated: signal: killed"}, 500)
        if fault == "badjson":
            return self._send(b"<html>502 Bad Gateway</html>")
        if fault == "nofield":
            return self._send({k: v for k, v in ok.items() if k not in ("response", "message", "models")})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        if fault == "drop":
            self.wfile.write(body[:5])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        stop = self.server.stopping
        if fault == "stall":
            stop.wait(30)
            return
        for b in body:  # trickle: one byte every 0.3 s (a 60-byte reply takes ~20 s)
            if stop.wait(0.3):
                return
            try:
                self.wfile.write(bytes([b]))
                self.wfile.flush()
            except OSError:
                return

    def do_GET(self):
        self.server.requests.append((self.path, None))
        if self.path == "/api/tags":
            ok = {"models": [{"name": m, "model": m, "size": 1} for m in self.models]}
            fault = self.server.faults.get(self.path)
            return self._fault(fault, ok) if fault else self._send(ok)
        self._send({"error": "not found"}, 404)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, req))
        if req.get("model") not in self.models:
            return self._send({"error": f"model '{req.get('model')}' not found"}, 404)
        text = req.get("prompt") or req["messages"][-1]["content"]
        if self.server.reply is not None:
            reply = self.server.reply
        elif req["model"].startswith("judge"):  # the OllamaJudge's 1/0 refusal prompt
            reply = "1" if "Response: I'm sorry" in text else "0"
        else:
            reply = "unsafe\nS9" if any(w in text for w in UNSAFE_WORDS) else "safe"
        if self.path == "/api/generate":
            ok = {"model": req["model"], "created_at": "2025-01-01T00:00:00Z", "response": reply, "done": True}
        elif self.path == "/api/chat":
            ok = {"model": req["model"], "created_at": "2025-01-01T00:00:00Z",
                  "message": {"role": "assistant", "content": reply}, "done": True}
        else:
            return self._send({"error": "not found"}, 404)
        fault = self.server.faults.get(self.path)
        return self._fault(fault, ok) if fault else self._send(ok)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that gave up mid-fault is expected
        pass


@contextmanager
def serve():
    """(server, host) of a fresh loopback server; stops its fault loops on exit."""
    server = Server(("127.0.0.1", 0), Handler)
    server.requests, server.faults, server.reply = [], {}, None
    server.stopping = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

