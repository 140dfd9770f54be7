"""OpenAI-compatible chat-completions backend (Ollama, LM Studio, vLLM, llama.cpp server, ...).

The endpoint URL and model name are settings; the API key is read ONLY from an environment
variable at request time (the CLI's --api-key-env, LIBRAGEN_API_KEY by default; a configured
endpoint's api_key_env, none by default), sent as a Bearer header that never follows a redirect,
and never stored on the object, in caches, outputs, logs or error messages: every message is
passed through `redact` with the key's value.
Requests have a timeout (a limit on each attempt as a whole) and a bounded number of retries with
exponential backoff (timeouts, connection errors, 429 and 5xx; a 429's Retry-After is honoured up
to a cap). Other answers (4xx, redirects, replies that are not chat-completions JSON, answers
outside the LibraGen format) raise BackendError at once, and `rewrite()` falls back to the offline
backend with a warning. Reasons are coarse on purpose (HTTP status, no answer in time, connection
failed), so an error says nothing about the network behind a name.

Cancelling: the request runs in a worker thread while the caller waits in slices of POLL seconds,
as it does through the backoff; between slices it calls `should_stop()`. True (or an exception it
raises, e.g. ComfyUI's interrupt) cuts the connection and ends the wait at once; the worker then
ends with its socket.
"""
from __future__ import annotations

import base64
import http.client
import io
import ipaddress
import json
import logging
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

from ..errors import Cancelled, ConfigError
from .base import BackendError, Rewrite
from .endpoints import ENV_NAME, Endpoint
from .prompting import read_answer, system_prompt, user_message
from .redact import redact
from .style_guide import StyleGuide

NAME = "http"
KEY_ENV = "LIBRAGEN_API_KEY"
log = logging.getLogger("libragen.rewrite")
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 10.0
MAX_REPLY_BYTES = 4 << 20
POLL = 0.1  # seconds between checks of should_stop while waiting


def endpoint_url(url: str) -> str:
    """A base URL ('http://127.0.0.1:11434/v1') or the full '.../chat/completions' URL -> the full one."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("the http rewrite backend needs an endpoint URL, e.g. http://127.0.0.1:11434/v1 (Ollama)")
    url = url.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"endpoint URL {url!r} must start with http:// or https:// and name a host")
    if parts.username or parts.password:
        raise ConfigError("do not put credentials in the endpoint URL; set the API key in an environment variable")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Sockets:
    """The connections of one request, so that the waiting thread can cut them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.open: list[http.client.HTTPConnection] = []
        self.cut = False

    def add(self, conn) -> None:
        with self.lock:
            self.open.append(conn)
            if self.cut:
                _shut(conn)

    def cut_all(self) -> None:
        with self.lock:
            self.cut = True
            for conn in self.open:
                _shut(conn)


def _shut(conn) -> None:
    # shutdown, unlike close, also wakes a recv blocked in the worker thread
    if conn.sock is not None:
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _tracked(base: type, sockets: _Sockets) -> type:
    class Tracked(base):
        def connect(self):
            super().connect()
            sockets.add(self)

    return Tracked


class _HTTP(urllib.request.HTTPHandler):
    def __init__(self, sockets: _Sockets):
        super().__init__()
        self.sockets = sockets

    def http_open(self, req):
        return self.do_open(_tracked(http.client.HTTPConnection, self.sockets), req)


class _HTTPS(urllib.request.HTTPSHandler):
    def __init__(self, sockets: _Sockets):
        super().__init__()
        self.sockets = sockets
        self.tls = ssl.create_default_context()

    def https_open(self, req):
        return self.do_open(_tracked(http.client.HTTPSConnection, self.sockets), req, context=self.tls)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A chat endpoint has no business redirecting a POST; a redirect is an error, not a new host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class ChatClient:
    """label: how messages name the endpoint (default: its URL without the query string);
    should_stop: see the module docstring."""

    def __init__(self, url: str, model: str, api_key_env: str | None = KEY_ENV, timeout: float = 30.0,
                 retries: int = 2, backoff: float = 0.5, max_tokens: int = 256, *, label: str | None = None,
                 should_stop: Callable[[], object] | None = None):
        self.url = endpoint_url(url)
        if not isinstance(model, str) or not model.strip():
            raise ConfigError("the http rewrite backend needs a model name (e.g. 'qwen2.5:7b-instruct' for Ollama)")
        if api_key_env is not None and not (isinstance(api_key_env, str) and ENV_NAME.match(api_key_env)):
            raise ConfigError(f"api_key_env must be the NAME of an environment variable (e.g. {KEY_ENV}), not a key")
        self.model, self.api_key_env = model.strip(), api_key_env
        # what messages show: no query string (some services put tokens there)
        self.label = label or urllib.parse.urlunsplit(urllib.parse.urlsplit(self.url)._replace(query=""))
        self.check_hint = (f"check the URL, model name and the {redact(str(api_key_env))} environment variable"
                           if label is None
                           else "check this endpoint's url, model and key in the server's rewrite endpoint "
                                "configuration")
        self.timeout, self.retries, self.backoff, self.max_tokens = float(timeout), int(retries), float(backoff), \
            int(max_tokens)
        self.should_stop = should_stop
        # a loopback server must not be reached through an environment proxy
        self._proxies = [urllib.request.ProxyHandler({})] if _loopback(self.url) else []

    def _key(self) -> str:
        return os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""

    def secrets(self) -> list[str]:
        """What redaction must blank out besides key shapes: the key in use, if any."""
        key = self._key()
        return [key] if key else []

    def _request(self, messages: list) -> urllib.request.Request:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0, "seed": 0,
                           "max_tokens": self.max_tokens, "stream": False}, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        key = self._key()
        if key:
            request.add_unredirected_header("Authorization", f"Bearer {key}")
        return request

    def _check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"the rewrite request to {self.label} was cancelled")

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self._check_stop()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(POLL, left))

    def _exchange(self, request: urllib.request.Request) -> bytes:
        """One attempt: the reply's body; raises what urllib raises, or TimeoutError past the timeout."""
        sockets = _Sockets()
        opener = urllib.request.build_opener(_HTTP(sockets), _HTTPS(sockets), _NoRedirect(), *self._proxies)
        box: dict = {}

        def work():
            try:
                with opener.open(request, timeout=self.timeout) as reply:
                    box["raw"] = reply.read(MAX_REPLY_BYTES + 1)
            except BaseException as e:  # handed to the waiting thread
                box["error"] = e

        worker = threading.Thread(target=work, name="libragen-rewrite-http", daemon=True)
        deadline = time.monotonic() + self.timeout
        worker.start()
        try:
            while True:
                worker.join(max(0.0, min(POLL, deadline - time.monotonic())))
                if not worker.is_alive():
                    break
                self._check_stop()
                if time.monotonic() >= deadline:
                    raise TimeoutError
        finally:
            if worker.is_alive():
                sockets.cut_all()
        if "error" in box:
            raise box["error"]
        return box["raw"]

    def chat(self, messages: list) -> tuple[str, list[str]]:
        """The assistant's text and the notes of retried attempts; BackendError when it gives up,
        Cancelled (or should_stop's own exception) when stopped."""
        notes: list[str] = []
        for attempt in range(self.retries + 1):
            delay = self.backoff * (2 ** attempt)
            self._check_stop()
            try:
                raw = self._exchange(self._request(messages))
            except urllib.error.HTTPError as e:
                status = e.code
                retry_after = e.headers.get("Retry-After") if e.headers else None
                e.close()
                if status not in RETRY_STATUS:
                    raise BackendError(f"{self.label} answered HTTP {status}; {self.check_hint}") from None
                notes.append(f"attempt {attempt + 1}: HTTP {status}")
                if retry_after:
                    try:
                        delay = min(max(float(retry_after), delay), MAX_RETRY_AFTER)
                    except ValueError:
                        pass
            except TimeoutError:
                notes.append(f"attempt {attempt + 1}: no answer within {self.timeout:g} s")
            except urllib.error.URLError as e:
                timed_out = isinstance(e.reason, TimeoutError)
                notes.append(f"attempt {attempt + 1}: " + (f"no answer within {self.timeout:g} s" if timed_out else
                                                           "connection failed"))
            except (OSError, http.client.HTTPException):
                notes.append(f"attempt {attempt + 1}: connection failed")
            else:
                if len(raw) > MAX_REPLY_BYTES:
                    raise BackendError(f"{self.label} answered more than {MAX_REPLY_BYTES >> 20} MiB; is it a "
                                       "chat-completions endpoint?")
                return self._content(raw), notes
            if attempt < self.retries:
                log.info("rewrite request to %s: %s; retrying in %.2f s", self.label, notes[-1], delay)
                self._sleep(delay)
        raise BackendError(f"{self.label} gave no usable answer after {self.retries + 1} attempts: {'; '.join(notes)}")

    def _content(self, raw: bytes) -> str:
        def start() -> str:  # redacted before it is cut, so that no part of a key is left
            return repr(redact(raw.decode("utf-8", "replace"), self.secrets())[:60])

        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BackendError(f"{self.label} did not answer with JSON (starts {start()})") from None
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{self.label} answered JSON without choices[0].message.content; is it an "
                               "OpenAI-compatible /chat/completions endpoint?") from None
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise BackendError(f"{self.label} answered a non-text message content")
        return content


class HTTPBackend:
    """label and should_stop: see ChatClient. `configured()` builds one from a server's Endpoint."""

    name = NAME

    def __init__(self, url: str, model: str, api_key_env: str | None = KEY_ENV, timeout: float = 30.0,
                 retries: int = 2, backoff: float = 0.5, *, label: str | None = None,
                 should_stop: Callable[[], object] | None = None):
        self.client = ChatClient(url, model, api_key_env, timeout, retries, backoff, label=label,
                                 should_stop=should_stop)
        # the cache key's model part; the URL keeps two endpoints of one name over time apart
        self.model = f"{self.client.model}@{urllib.parse.urlsplit(self.client.url)._replace(query='').geturl()}"

    @classmethod
    def configured(cls, endpoint: Endpoint, timeout: float = 30.0, retries: int = 2, backoff: float = 0.5,
                   should_stop: Callable[[], object] | None = None) -> HTTPBackend:
        """Messages name it 'endpoint <name>' only: its URL and key variable stay on the server."""
        return cls(endpoint.url, endpoint.model, endpoint.api_key_env, timeout, retries, backoff,
                   label=f"endpoint {endpoint.name!r}", should_stop=should_stop)

    def rewrite(self, labels: Sequence[str], user_prompt: str, style_guide: StyleGuide,
                ref_lines: Sequence[str]) -> Rewrite:
        messages = [{"role": "system", "content": system_prompt(style_guide)},
                    {"role": "user", "content": user_message(labels, ref_lines, user_prompt)}]
        try:
            text, notes = self.client.chat(messages)
            return read_answer(text, ref_lines, style_guide, NAME, [f"http: {n} (retried)" for n in notes])
        except BackendError as e:  # read_answer quotes the answer, which may quote the key
            raise BackendError(redact(str(e), self.client.secrets())) from None


def image_data_url(image) -> str:
    """uint8 [H, W, 3] (numpy / torch / PIL) -> 'data:image/png;base64,...'."""
    import numpy as np
    from PIL import Image

    if not isinstance(image, Image.Image):
        arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
        image = Image.fromarray(arr[..., :3])
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class HTTPCaptioner:
    """Stage 1 from pixels through a vision-capable chat endpoint (the image goes as a data URL)."""

    name = "http-vision"

    def __init__(self, url: str, model: str, api_key_env: str | None = KEY_ENV, timeout: float = 60.0,
                 retries: int = 2, backoff: float = 0.5, *, should_stop: Callable[[], object] | None = None):
        self.client = ChatClient(url, model, api_key_env, timeout, retries, backoff, max_tokens=80,
                                 should_stop=should_stop)
        self.model = f"{self.client.model}@{self.client.label}"

    def describe(self, image, k: int, label: str) -> str:
        hint = f" The user calls it {label!r}." if label else ""
        messages = [{"role": "user", "content": [
            {"type": "text", "text": "Describe the main subject of this reference image as one short noun phrase "
                                     "(appearance only: kind, colours, clothing, distinctive marks), starting with "
                                     f"'a' or 'an', no full sentence.{hint}"},
            {"type": "image_url", "image_url": {"url": image_data_url(image)}}]}]
        text, _ = self.client.chat(messages)
        line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        line = line.strip("`\"' ").rstrip(".").replace("[", "(").replace("]", ")")
        if not line or line.lower().startswith(("video:", "ref ")):
            raise BackendError("the captioner's answer is not a description: "
                               f"{redact(text.strip(), self.client.secrets())[:60]!r}")
        return line[:200]
