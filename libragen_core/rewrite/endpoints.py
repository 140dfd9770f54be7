"""The rewrite endpoints a server's owner allows: the only ones the ComfyUI node can reach.

A workflow names an endpoint by its name and nothing else; its URL, model and the NAME of the
environment variable holding its key live here, on the server. The list is a JSON file:

    {"endpoints": {
        "ollama": {"url": "http://127.0.0.1:11434/v1", "model": "qwen2.5:7b-instruct"},
        "openai": {"url": "https://api.openai.com/v1", "model": "gpt-4o-mini",
                   "api_key_env": "OPENAI_API_KEY"}}}

read from $LIBRAGEN_REWRITE_ENDPOINTS (a file path, or the JSON itself when it starts with '{')
or else from a default file (the node's: <ComfyUI user folder>/libragen/rewrite_endpoints.json).
No file means no endpoints. An endpoint without api_key_env is sent no key. Errors name the file
(or the variable) and the fix, and never quote a value that could be a key or a URL.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

ENDPOINTS_ENV = "LIBRAGEN_REWRITE_ENDPOINTS"
FILE_NAME = "rewrite_endpoints.json"
FIELDS = ("url", "model", "api_key_env")
MAX_ENDPOINTS = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
EXAMPLE = ('{"endpoints": {"ollama": {"url": "http://127.0.0.1:11434/v1", "model": "qwen2.5:7b-instruct", '
           '"api_key_env": "OLLAMA_API_KEY"}}}')


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    model: str
    api_key_env: str | None = None

    def key(self) -> str:
        """The key's current value ('' when unset or no variable is named); read, never stored."""
        return os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""


def _endpoint(name, spec, source: str) -> Endpoint:
    from .http_backend import endpoint_url

    where = f"{source}: endpoint {name!r}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be an object with url and model, e.g. {EXAMPLE}")
    unknown = sorted(set(spec) - set(FIELDS))
    if unknown:
        hint = (" A key never goes in this file: set it in an environment variable before starting the server and "
                "put that variable's NAME in api_key_env." if any("key" in k.lower() or "token" in k.lower()
                                                                  for k in unknown) else "")
        raise ConfigError(f"{where} has unknown field(s) {', '.join(map(repr, unknown))}; the fields are "
                          f"{', '.join(FIELDS)}.{hint}")
    url, model, env = spec.get("url"), spec.get("model"), spec.get("api_key_env")
    try:
        endpoint_url(url)
    except ConfigError:
        raise ConfigError(f"{where}: url must be an http:// or https:// URL with a host and no user:password@ "
                          "(e.g. http://127.0.0.1:11434/v1); fix it in the file.") from None
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"{where}: model must name the model the endpoint serves (e.g. qwen2.5:7b-instruct).")
    if env is not None and (not isinstance(env, str) or not ENV_NAME.match(env)):
        raise ConfigError(f"{where}: api_key_env must be the NAME of an environment variable (letters, digits, _), "
                          "not the key itself; put the key in that variable before starting the server.")
    return Endpoint(name, url.strip(), model.strip(), env)


def parse_endpoints(data, source: str) -> dict[str, Endpoint]:
    """{name: Endpoint} from the parsed JSON; source names where it came from, for messages."""
    if not isinstance(data, dict) or set(data) != {"endpoints"} or not isinstance(data["endpoints"], dict):
        raise ConfigError(f"{source} must hold one object, {{\"endpoints\": {{name: {{url, model, api_key_env}}}}}}, "
                          f"e.g. {EXAMPLE}")
    items = data["endpoints"]
    if len(items) > MAX_ENDPOINTS:
        raise ConfigError(f"{source} lists {len(items)} endpoints; at most {MAX_ENDPOINTS} are allowed.")
    out = {}
    for name, spec in items.items():
        if not _NAME.match(name):
            raise ConfigError(f"{source}: endpoint names are 1-64 letters, digits, '.', '_' or '-', starting with a "
                              "letter or digit; rename the offending entry (names are what workflows show).")
        out[name] = _endpoint(name, spec, source)
    return out


def _parse_text(text: str, source: str) -> dict[str, Endpoint]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        # the position only: the decoder's message never quotes the text, which may hold a key
        raise ConfigError(f"{source} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); fix it, "
                          f"e.g. {EXAMPLE}") from None
    return parse_endpoints(data, source)


def _read_file(path: Path, source: str) -> dict[str, Endpoint]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not UTF-8 text; save it as UTF-8 JSON.") from None
    except OSError as e:
        raise ConfigError(f"{source} cannot be read ({e.strerror}); check that it is a readable file.") from None
    return _parse_text(text, source)


def load_endpoints(default_file: str | os.PathLike | None = None) -> dict[str, Endpoint]:
    """The configured endpoints: $LIBRAGEN_REWRITE_ENDPOINTS if set, else default_file if it
    exists, else none. ConfigError (naming the file or variable, and the fix) when it is broken."""
    env = os.environ.get(ENDPOINTS_ENV, "").strip()
    if env.startswith("{"):
        return _parse_text(env, f"the environment variable {ENDPOINTS_ENV}")
    if env:
        path = Path(env).expanduser()
        source = f"{path} (named by {ENDPOINTS_ENV})"
        if not path.is_file():
            raise ConfigError(f"{source} does not exist or is not a file; create it or unset {ENDPOINTS_ENV}.")
        return _read_file(path, source)
    if default_file is None or not Path(default_file).exists():
        return {}
    return _read_file(Path(default_file), str(default_file))
