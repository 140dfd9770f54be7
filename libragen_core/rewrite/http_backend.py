"""OpenAI-compatible chat-completions backend (Ollama, LM Studio, vLLM, llama.cpp server, ...).

The endpoint URL and model name are settings; the API key is read ONLY from an environment
variable (LIBRAGEN_API_KEY unless another name is given) at request time, sent as a Bearer
header, and never stored on the object, in caches, outputs, logs or error messages.
Requests have a timeout and a bounded number of retries with exponential backoff (timeouts,
connection errors, 429 and 5xx; a 429's Retry-After is honoured up to a cap). Other 4xx answers,
replies that are not chat-completions JSON, and answers outside the LibraGen format raise
BackendError at once, and `rewrite()` falls back to the offline backend with a warning.
"""
from __future__ import annotations

import base64
import io
import ipaddress
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from ..errors import ConfigError
from .base import BackendError, Rewrite
from .prompting import read_answer, system_prompt, user_message
from .style_guide import StyleGuide

NAME = "http"
KEY_ENV = "LIBRAGEN_API_KEY"
log = logging.getLogger("libragen.rewrite")
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 10.0


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


class ChatClient:
    def __init__(self, url: str, model: str, api_key_env: str = KEY_ENV, timeout: float = 30.0, retries: int = 2,
                 backoff: float = 0.5, max_tokens: int = 256):
        self.url = endpoint_url(url)
        # what messages, logs and cache keys show: no query string (some services put tokens there)
        self.shown = urllib.parse.urlunsplit(urllib.parse.urlsplit(self.url)._replace(query=""))
        if not isinstance(model, str) or not model.strip():
            raise ConfigError("the http rewrite backend needs a model name (e.g. 'qwen2.5:7b-instruct' for Ollama)")
        if not api_key_env or not str(api_key_env).replace("_", "").isalnum():
            raise ConfigError(f"api_key_env must be the NAME of an environment variable (e.g. {KEY_ENV}), not a key")
        self.model, self.api_key_env = model.strip(), str(api_key_env)
        self.timeout, self.retries, self.backoff, self.max_tokens = float(timeout), int(retries), float(backoff), \
            int(max_tokens)
        # a loopback server must not be reached through an environment proxy
        handlers = [urllib.request.ProxyHandler({})] if _loopback(self.url) else []
        self._opener = urllib.request.build_opener(*handlers)

    def _request(self, messages: list) -> urllib.request.Request:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0, "seed": 0,
                           "max_tokens": self.max_tokens, "stream": False}, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "").strip()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return urllib.request.Request(self.url, data=body, headers=headers, method="POST")

    def chat(self, messages: list) -> tuple[str, list[str]]:
        """The assistant's text and the notes of retried attempts; BackendError when it gives up."""
        notes: list[str] = []
        for attempt in range(self.retries + 1):
            delay = self.backoff * (2 ** attempt)
            try:
                with self._opener.open(self._request(messages), timeout=self.timeout) as reply:
                    raw = reply.read()
            except urllib.error.HTTPError as e:
                status = e.code
                retry_after = e.headers.get("Retry-After") if e.headers else None
                e.close()
                if status not in RETRY_STATUS:
                    raise BackendError(f"{self.shown} answered HTTP {status}; check the URL, model name and the "
                                       f"{self.api_key_env} environment variable") from None
                notes.append(f"attempt {attempt + 1}: HTTP {status}")
                if retry_after:
                    try:
                        delay = min(max(float(retry_after), delay), MAX_RETRY_AFTER)
                    except ValueError:
                        pass
            except TimeoutError:
                notes.append(f"attempt {attempt + 1}: no answer within {self.timeout:g} s")
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, TimeoutError):
                    notes.append(f"attempt {attempt + 1}: no answer within {self.timeout:g} s")
                else:
                    notes.append(f"attempt {attempt + 1}: cannot connect ({reason})")
            except (ConnectionError, OSError) as e:
                notes.append(f"attempt {attempt + 1}: connection failed ({type(e).__name__})")
            else:
                return self._content(raw), notes
            if attempt < self.retries:
                log.info("rewrite endpoint %s: %s; retrying in %.2f s", self.shown, notes[-1], delay)
                time.sleep(delay)
        raise BackendError(f"{self.shown} gave no usable answer after {self.retries + 1} attempts: {'; '.join(notes)}")

    def _content(self, raw: bytes) -> str:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BackendError(f"{self.shown} did not answer with JSON (starts {raw[:40]!r})") from None
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{self.shown} answered JSON without choices[0].message.content; is it an "
                               "OpenAI-compatible /chat/completions endpoint?") from None
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise BackendError(f"{self.shown} answered a non-text message content")
        return content


class HTTPBackend:
    name = NAME

    def __init__(self, url: str, model: str, api_key_env: str = KEY_ENV, timeout: float = 30.0, retries: int = 2,
                 backoff: float = 0.5):
        self.client = ChatClient(url, model, api_key_env, timeout, retries, backoff)
        self.model = f"{self.client.model}@{self.client.shown}"

    def rewrite(self, labels: Sequence[str], user_prompt: str, style_guide: StyleGuide,
                ref_lines: Sequence[str]) -> Rewrite:
        messages = [{"role": "system", "content": system_prompt(style_guide)},
                    {"role": "user", "content": user_message(labels, ref_lines, user_prompt)}]
        text, notes = self.client.chat(messages)
        return read_answer(text, ref_lines, style_guide, NAME, [f"http: {n} (retried)" for n in notes])


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

    def __init__(self, url: str, model: str, api_key_env: str = KEY_ENV, timeout: float = 60.0, retries: int = 2,
                 backoff: float = 0.5):
        self.client = ChatClient(url, model, api_key_env, timeout, retries, backoff, max_tokens=80)
        self.model = f"{self.client.model}@{self.client.shown}"

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
            raise BackendError(f"the captioner's answer is not a description: {text.strip()[:60]!r}")
        return line[:200]
