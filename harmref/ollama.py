"""The one Ollama HTTP client: the LLM refusal judge (`judging.OllamaJudge`) and Llama Guard 3
(`guards.LlamaGuard`) both call it.

Functions take plain arguments (host, model, timeout). `timeout` is one overall deadline per
request, from the call to the last byte of the reply, not a per-read timeout: a server that
trickles bytes cannot stall a job past it. Every failure (no server, a missing model, an HTTP
error status, a body that is not JSON, a reply without the expected field, a dropped connection,
the deadline) raises `OllamaError`, whose message names the host and the model.
"""

from __future__ import annotations

import json
import threading
import time

DEFAULT_HOST = "http://127.0.0.1:11434"
MAX_REPLY_BYTES = 16 * 2**20  # a non-streamed reply of one short verdict is a few hundred bytes


class OllamaError(RuntimeError):
    """An Ollama server gave no usable reply; the message names the host, the model and the cause."""


class _Deadline(Exception):
    pass


def _base(host: str) -> str:
    host = host.strip().rstrip("/")
    return host if "://" in host else f"http://{host}"


def _fetch(method: str, url: str, body, timeout: float, deadline: float) -> tuple[int, bytes]:
    """(status, body bytes); raises `_Deadline` once the overall deadline passes between two reads."""
    import httpx

    with httpx.Client(timeout=httpx.Timeout(timeout)) as client, client.stream(method, url, json=body) as resp:
        data = bytearray()
        for chunk in resp.iter_bytes():
            data += chunk
            if time.monotonic() > deadline:
                raise _Deadline()
            if len(data) > MAX_REPLY_BYTES:
                raise OSError(f"the reply exceeds {MAX_REPLY_BYTES} bytes")
        return resp.status_code, bytes(data)


def request(host: str, model: str, method: str, path: str, body: dict | None = None, timeout: float = 60.0,
            off_switch: str = "") -> dict:
    """One JSON request to the Ollama API at `host`, finished within `timeout` seconds or `OllamaError`.

    `model` only names the model in messages; `off_switch` (e.g. "set generation.judge: substring")
    is added to the message when no server answers.
    """
    import httpx

    if not timeout or timeout <= 0:
        raise ValueError(f"the Ollama timeout must be a positive number of seconds, got {timeout!r}")
    base = _base(host)
    where = f"the Ollama server at {base} ({method} {path}, model {model!r})"
    deadline = time.monotonic() + timeout
    box: dict = {}

    def work():
        try:
            box["reply"] = _fetch(method, base + path, body, timeout, deadline)
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    worker = threading.Thread(target=work, name=f"ollama {path}", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    late = f"{where} sent no complete reply within the {timeout:g} s deadline; raise the timeout if the model is just slow"
    if worker.is_alive():  # the worker stops at its next read; its result is dropped
        raise OllamaError(late)
    e = box.get("error")
    if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol)):
        raise OllamaError(
            f"no Ollama server answers at {base} ({type(e).__name__}: {e}). Start one (`ollama serve`, then "
            f"`ollama pull {model}`)" + (f" or {off_switch}" if off_switch else "")
        ) from None
    if isinstance(e, (_Deadline, httpx.TimeoutException)):
        raise OllamaError(late) from None
    if e is not None:
        raise OllamaError(f"the connection to {where} broke ({type(e).__name__}: {e})") from None
    status, data = box["reply"]
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        obj = None
    if status >= 400:
        msg = obj.get("error") if isinstance(obj, dict) and obj.get("error") else data[:200].decode("utf-8", "replace")
        hint = f"; run `ollama pull {model}` there" if status == 404 and "not found" in str(msg) else ""
        raise OllamaError(f"{where} answered HTTP {status}: {msg!r}{hint}")
    if not isinstance(obj, dict):
        raise OllamaError(f"{where} sent a body that is not a JSON object: {data[:200].decode('utf-8', 'replace')!r}")
    if obj.get("error"):
        raise OllamaError(f"{where} answered with an error: {obj['error']!r}")
    return obj


def list_models(host: str, timeout: float = 60.0, model: str = "", off_switch: str = "") -> list[str]:
    """Names of the models the server at `host` has (GET /api/tags)."""
    obj = request(host, model, "GET", "/api/tags", timeout=timeout, off_switch=off_switch)
    models = obj.get("models")
    if not isinstance(models, list) or not all(isinstance(m, dict) and (m.get("model") or m.get("name")) for m in models):
        raise OllamaError(f"the Ollama server at {_base(host)} (GET /api/tags, model {model!r}) sent no list of models: "
                          f"{str(obj)[:200]!r}")
    return [m.get("model") or m.get("name") for m in models]


def check(host: str, model: str, timeout: float = 60.0, off_switch: str = "") -> None:
    """Raise `OllamaError`, naming the host, when no Ollama server answers there or it lacks `model`."""
    names = set(list_models(host, timeout, model, off_switch))
    if model not in names and f"{model}:latest" not in names:
        raise OllamaError(
            f"the Ollama server at {_base(host)} does not have {model!r} (it has {sorted(names)}); run `ollama pull {model}` there"
        )


def generate(host: str, model: str, prompt: str, timeout: float = 60.0, options: dict | None = None) -> str:
    """The reply of `model` to the raw `prompt` (POST /api/generate, not streamed; temperature 0 unless `options` say)."""
    body = {"model": model, "prompt": prompt, "stream": False, "options": {"temperature": 0, **(options or {})}}
    obj = request(host, model, "POST", "/api/generate", body, timeout)
    reply = obj.get("response")
    if not isinstance(reply, str):
        raise OllamaError(
            f"the Ollama server at {_base(host)} (POST /api/generate, model {model!r}) sent a reply without a string "
            f"field 'response': {str(obj)[:200]!r}"
        )
    return reply


class Served:
    """A model on an Ollama server (`host`, `model`, `timeout`): what the LLM refusal judge and Llama Guard
    share. `OFF_SWITCH` names the config change that turns their user off, in every error."""

    OFF_SWITCH = ""

    def __init__(self, host: str, model: str, timeout: float):
        self.host, self.model, self.timeout = host, model, timeout

    def check(self) -> None:
        """Fail early (before any work), naming the host, when no server answers or it lacks the model."""
        check(self.host, self.model, self.timeout, off_switch=self.OFF_SWITCH)

    def generate(self, prompt: str) -> str:
        """The model's reply to the raw `prompt` (temperature 0)."""
        return generate(self.host, self.model, prompt, self.timeout)
