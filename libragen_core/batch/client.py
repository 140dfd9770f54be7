"""One ComfyUI server over its HTTP and websocket API: upload references, queue a graph, follow
it to the end, list and download its output files.

Errors are sorted by what the caller should do: `ServerDown` (unreachable, connection dropped,
the server lost the job: run the job elsewhere), `JobFailed` (the server refused or failed the
job: record it, do not retry blindly), `LocalWriteError` (our own disk: stop the batch).
"""
from __future__ import annotations

import json
import mimetypes
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
import websocket

from ..errors import Cancelled, InputError, LibraGenError
from ..io.atomic import atomic_path

UPLOAD_SUBFOLDER = "libragen_batch"
FILE_KINDS_NOTE = "images, gifs, videos, audio: every list of {filename, subfolder, type} in a node's output"


class ServerDown(LibraGenError):
    """The server cannot be reached, dropped the connection, or lost the job (e.g. it restarted)."""


class JobFailed(LibraGenError):
    """The server refused the graph or its execution failed; the message is the server's."""


class LocalWriteError(LibraGenError):
    """Writing a downloaded file to the output folder failed (disk full, permissions)."""


@dataclass(frozen=True)
class OutputRef:
    node: str
    kind: str  # the output key ComfyUI used: images, gifs, videos, audio, ...
    filename: str
    subfolder: str
    type: str  # output or temp


def normalize_server_url(url: str) -> str:
    """'127.0.0.1:8188' -> 'http://127.0.0.1:8188'. URLs carrying credentials or a query are refused:
    ComfyUI needs none, and the URL is written to the manifest and the log."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--server {_redact(url)!r} is not an http(s)://HOST:PORT address")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InputError(f"--server {_redact(url)!r}: remove the user/password, query and fragment; "
                         "ComfyUI's API needs none and the address is written to the manifest")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _redact(url: str) -> str:
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"
    except ValueError:
        return "<unparseable address>"


def output_refs(entry: dict, include_temp: bool = False) -> list[OutputRef]:
    """Every file a finished prompt produced, in node order. Temp files (PreviewImage) are only
    included on request: they are previews, and the server deletes them on restart."""
    refs = []
    outputs = entry.get("outputs") or {}
    for node in sorted(outputs, key=lambda s: (len(s), s)):
        for kind, items in (outputs[node] or {}).items():
            if not isinstance(items, list):
                continue
            for item in items:
                if not (isinstance(item, dict) and isinstance(item.get("filename"), str) and item["filename"]):
                    continue
                typ = item.get("type") or "output"
                if typ == "output" or (typ == "temp" and include_temp):
                    refs.append(OutputRef(node, kind, item["filename"], str(item.get("subfolder") or ""), typ))
    return refs


def finished_nodes(entry: dict) -> set[str]:
    """Nodes a finished prompt's history entry shows as run: those with outputs, and those the server
    took from its cache (it does not run them again; their outputs are listed all the same)."""
    done = {str(n) for n in (entry.get("outputs") or {})}
    for kind, data in (entry.get("status") or {}).get("messages") or []:
        if kind == "execution_cached" and isinstance(data, dict):
            done.update(str(n) for n in data.get("nodes") or [])
    return done


def describe_failure(entry: dict) -> str:
    """The server's own words for a failed prompt, from its history entry."""
    for kind, data in (entry.get("status") or {}).get("messages") or []:
        if kind == "execution_error":
            where = f"node {data.get('node_id')} ({data.get('node_type')})"
            msg = str(data.get("exception_message", "")).strip()
            return f"{where} raised {data.get('exception_type', 'an error')}: {msg}"
        if kind == "execution_interrupted":
            return f"interrupted on the server at node {data.get('node_id')} ({data.get('node_type')})"
    return f"the server reported status {(entry.get('status') or {}).get('status_str')!r} without a message"


def describe_node_errors(node_errors: dict) -> list[str]:
    """ComfyUI's per-node validation errors (from a /prompt answer), one readable line each."""
    lines: list[str] = []
    for nid, info in (node_errors or {}).items():
        for e in (info or {}).get("errors", []):
            detail = str(e.get("details") or "")
            if e.get("type") == "custom_validation_failed" and " - " in detail:
                # ComfyUI repeats a node's own validation message once per input as '<input> - <message>'
                detail = detail.split(" - ", 1)[1]
            line = f"node {nid} ({info.get('class_type')}): {e.get('message')}" + (f" ({detail})" if detail else "")
            if line not in lines:
                lines.append(line)
    return lines


def describe_refusal(body: dict) -> str:
    """A /prompt 400 answer (graph validation) as one readable line."""
    err = body.get("error") or {}
    head = str(err.get("message") or "the server refused the workflow")
    if err.get("details"):
        head += f": {err['details']}"
    return "; ".join([head, *(line for line in describe_node_errors(body.get("node_errors") or {}) if line != head)])


def describe_missing_outputs(graph: dict, missing: list[str], node_errors: dict) -> str:
    """Why a finished prompt lacks outputs: the output nodes that produced nothing and, when the
    server refused part of the graph, its words for each refused node."""
    names = ", ".join(f"{nid} ({(graph.get(nid) or {}).get('class_type', '?')})" for nid in missing)
    text = f"output node{'s' if len(missing) > 1 else ''} {names} produced nothing"
    reasons = describe_node_errors(node_errors)
    if reasons:
        return f"{text}: the server refused part of the graph and ran the rest: " + "; ".join(reasons)
    return (f"{text} although the server reported no error; check that node on the server (a node that saves "
            "without reporting a file cannot be checked)")


class ComfyClient:
    """One connection to one server. Not thread-safe: each worker slot owns its own client (and so
    its own client_id, which is what ComfyUI routes progress messages by)."""

    def __init__(self, url: str, request_timeout: float = 30.0, poll_interval: float = 2.0):
        self.url = normalize_server_url(url)
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval
        self.client_id = uuid.uuid4().hex
        self.session = requests.Session()
        # No proxies or ~/.netrc credentials from the environment: nothing secret rides along.
        self.session.trust_env = False
        self._ws: websocket.WebSocket | None = None
        self._uploads: dict[str, str] = {}

    # -- plain HTTP -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", (min(10.0, self.request_timeout), self.request_timeout))
        try:
            resp = self.session.request(method, self.url + path, **kw)
        except requests.RequestException as e:
            raise ServerDown(f"{self.url} did not answer {method} {path}: {type(e).__name__}") from None
        if resp.status_code >= 500:
            raise ServerDown(f"{self.url} answered {method} {path} with HTTP {resp.status_code}")
        return resp

    def _json(self, resp: requests.Response, what: str):
        try:
            return resp.json()
        except ValueError:
            raise ServerDown(f"{self.url} sent a non-JSON answer to {what} (HTTP {resp.status_code}); "
                             "is this a ComfyUI server?") from None

    def ping(self) -> dict:
        resp = self._request("GET", "/system_stats")
        if resp.status_code != 200:
            raise ServerDown(f"{self.url}/system_stats answered HTTP {resp.status_code}; is this a ComfyUI server?")
        return self._json(resp, "/system_stats")

    def node_types(self, class_types: set[str]) -> tuple[list[str], set[str]]:
        """Of the workflow's node classes: those this server lacks, and those that are output nodes
        (the ones ComfyUI runs a graph for, so each should leave an entry in the history)."""
        resp = self._request("GET", "/object_info", timeout=(10.0, max(60.0, self.request_timeout)))
        known = self._json(resp, "/object_info")
        missing = sorted(c for c in class_types if c not in known)
        outputs = {c for c in class_types if isinstance(known.get(c), dict) and known[c].get("output_node")}
        return missing, outputs

    def upload(self, sha256: str, path: Path) -> str:
        """Upload a reference once per server session under a content-addressed name; returns the
        value a LoadImage-style input takes ('libragen_batch/<stem>-<hash>.<ext>')."""
        if sha256 in self._uploads:
            return self._uploads[sha256]
        name = f"{path.stem[:40]}-{sha256[:16]}{path.suffix.lower()}"
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        try:
            data = path.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read reference {path} ({e})") from None
        resp = self._request("POST", "/upload/image", files={"image": (name, data, mime)},
                             data={"type": "input", "subfolder": UPLOAD_SUBFOLDER})
        if resp.status_code != 200:
            raise JobFailed(f"{self.url} refused the upload of {path.name} (HTTP {resp.status_code})")
        body = self._json(resp, "/upload/image")
        value = f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]
        self._uploads[sha256] = value
        return value

    def submit(self, graph: dict) -> tuple[str, dict]:
        """Queue a graph; returns its prompt id and the node errors of the branches the server
        refused while it queued the rest (empty when the whole graph was accepted)."""
        self._connect_ws()  # before queueing, so no message about this prompt can be missed
        resp = self._request("POST", "/prompt", json={"prompt": graph, "client_id": self.client_id})
        body = self._json(resp, "/prompt")
        if resp.status_code != 200:
            raise JobFailed(describe_refusal(body if isinstance(body, dict) else {}))
        node_errors = body.get("node_errors")
        return body["prompt_id"], node_errors if isinstance(node_errors, dict) else {}

    def history(self, prompt_id: str) -> dict | None:
        resp = self._request("GET", f"/history/{prompt_id}")
        body = self._json(resp, "/history") if resp.status_code == 200 else {}
        return body.get(prompt_id)

    def queued(self, prompt_id: str) -> bool:
        body = self._json(self._request("GET", "/queue"), "/queue")
        items = (body.get("queue_running") or []) + (body.get("queue_pending") or [])
        return any(len(item) > 1 and item[1] == prompt_id for item in items)

    def cancel(self, prompt_id: str) -> None:
        """Best effort: drop the prompt from the queue or stop it if running. Never raises."""
        try:
            self._request("POST", "/queue", json={"delete": [prompt_id]}, timeout=(2.0, 5.0))
            self._request("POST", "/interrupt", json={"prompt_id": prompt_id}, timeout=(2.0, 5.0))
        except LibraGenError:
            pass

    def forget(self, prompt_id: str) -> None:
        """Drop a downloaded prompt from the server's history (it keeps up to 10,000 in memory)."""
        try:
            self._request("POST", "/history", json={"delete": [prompt_id]}, timeout=(2.0, 5.0))
        except LibraGenError:
            pass

    def download(self, ref: OutputRef, dest: Path) -> int:
        """Stream one output file to `dest` (atomically); returns its size in bytes."""
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        resp = self._request("GET", "/view", params=params, stream=True)
        with resp:
            if resp.status_code != 200:
                raise JobFailed(f"{self.url} listed output {ref.subfolder + '/' if ref.subfolder else ''}"
                                f"{ref.filename} of node {ref.node} but /view answered HTTP {resp.status_code}")
            size = 0
            try:
                with atomic_path(dest) as tmp, open(tmp, "wb") as f:
                    for chunk in resp.iter_content(1 << 20):
                        f.write(chunk)
                        size += len(chunk)
            except requests.RequestException as e:
                raise ServerDown(f"{self.url} dropped the download of {ref.filename}: {type(e).__name__}") from None
            except OSError as e:
                raise LocalWriteError(f"cannot write {dest} ({e}); free disk space or fix permissions, "
                                      "then rerun the same command to resume") from None
        return size

    # -- websocket -------------------------------------------------------------------------------
    def _ws_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + "/ws", f"clientId={self.client_id}", ""))

    def _connect_ws(self) -> None:
        if self._ws is not None and self._ws.connected:
            return
        self._close_ws()
        parts = urlsplit(self.url)
        timeout = min(10.0, self.request_timeout)
        sock = None
        try:
            # Our own socket, so websocket-client consults no proxy settings from the environment
            # (the HTTP session ignores them too: both paths reach the server the same way).
            sock = socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                            timeout=timeout)
            if parts.scheme == "https":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
            self._ws = websocket.create_connection(self._ws_url(), timeout=timeout, socket=sock)
        except (OSError, websocket.WebSocketException) as e:
            if sock is not None:
                sock.close()
            raise ServerDown(f"{self.url} refused the websocket: {type(e).__name__}") from None

    def _close_ws(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close(timeout=1)
            except (OSError, websocket.WebSocketException):
                pass
        self._ws = None

    def _recv(self, wait: float) -> dict | None:
        """One JSON message, or None when none came in `wait` seconds. A dropped socket is reopened
        once (the server may only have closed it); if that fails the server is down."""
        assert self._ws is not None
        self._ws.settimeout(max(0.05, wait))
        try:
            msg = self._ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        except (OSError, websocket.WebSocketException):
            self._close_ws()
            self._connect_ws()
            return {"type": "_reconnected", "data": {}}
        if isinstance(msg, bytes) or not msg:
            return None  # binary preview frames
        try:
            data = json.loads(msg)
        except json.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    def wait(self, prompt_id: str, timeout: float | None = None,
             should_stop: Callable[[], bool] = lambda: False,
             on_event: Callable[[str, dict], None] | None = None) -> dict:
        """Follow a queued prompt to its end and return its history entry (outputs included).

        Websocket messages drive progress and signal the end quickly; the history endpoint is
        the source of truth and is also polled every `poll_interval` seconds, so a missed message
        costs at most that long. A prompt that is neither queued nor in the history was lost (the
        server restarted) and raises ServerDown.
        """
        emit = on_event or (lambda kind, data: None)
        start = time.monotonic()
        next_poll = start + self.poll_interval
        urgent_until = 0.0
        self._connect_ws()
        while True:
            if should_stop():
                self.cancel(prompt_id)
                raise Cancelled(f"stopped while {prompt_id} was running on {self.url}")
            now = time.monotonic()
            if timeout is not None and now - start > timeout:
                self.cancel(prompt_id)
                raise JobFailed(f"timed out after {timeout:g} s on {self.url} (counted from queueing); "
                                "raise --timeout or check the server")
            msg = self._recv(min(0.5, max(0.05, next_poll - now)))
            if msg is not None:
                kind, data = msg.get("type"), msg.get("data") or {}
                if kind == "_reconnected":
                    next_poll = 0.0
                elif data.get("prompt_id") == prompt_id:
                    if kind == "execution_start":
                        emit("start", data)
                    elif kind == "executing" and data.get("node") is not None:
                        emit("node", data)
                    elif kind == "progress":
                        emit("progress", data)
                    elif kind in ("execution_success", "execution_error", "execution_interrupted") or (
                            kind == "executing" and data.get("node") is None):
                        # the history entry is stored a moment after these messages
                        urgent_until = time.monotonic() + 5.0
                        next_poll = 0.0
            now = time.monotonic()
            if now < next_poll:
                continue
            entry = self.history(prompt_id)
            if entry is None and now >= urgent_until:
                # queue before history: the server moves a prompt from one to the other atomically
                if not self.queued(prompt_id):
                    entry = self.history(prompt_id)
                    if entry is None:
                        raise ServerDown(f"{self.url} lost prompt {prompt_id} (it is neither queued nor "
                                         "finished; the server probably restarted)")
            if entry is not None:
                status = entry.get("status") or {}
                if status.get("status_str") == "success" or status.get("completed"):
                    return entry
                raise JobFailed(describe_failure(entry))
            next_poll = now + (0.05 if now < urgent_until else self.poll_interval)

    def reset(self) -> None:
        """Forget per-session state after the server went away (its uploads may be gone too)."""
        self._close_ws()
        self._uploads.clear()

    def close(self) -> None:
        self._close_ws()
        self.session.close()
