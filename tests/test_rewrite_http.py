"""HTTP rewrite backend against a real chat-completions server on 127.0.0.1 (http.server in a
thread): success, slow replies, 5xx/429 retries, malformed replies, fallback, the API key's path
(sent as a Bearer header, found nowhere else), cancelling, the server's endpoint configuration
(rewrite_endpoints.json) and redaction."""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from libragen_core.errors import Cancelled, ConfigError
from libragen_core.rewrite import rewrite
from libragen_core.rewrite.endpoints import ENDPOINTS_ENV, Endpoint, load_endpoints
from libragen_core.rewrite.http_backend import ChatClient, HTTPBackend, HTTPCaptioner, endpoint_url
from libragen_core.rewrite.redact import REDACTED, looks_like_key, redact
from libragen_core.spriteworld.captions import caption_facts

KEY = "sk-test-SECRET-7f3a9c1e5b"
GOOD = "Video: Ref 1[the blue star] spins clockwise while Ref 2[the red circle] bounces up and down on a sky blue gradient."
LABELS = ["the blue star", "the red circle"]
PROMPT = "make the star rotate clockwise and the red one hop in place"


def chat_reply(content: str) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).encode()


class Server:
    """Scripted replies: each request pops (status, body bytes, delay seconds, headers); the last one repeats."""

    def __init__(self):
        self.script: list[tuple[int, bytes, float, dict]] = []
        self.requests: list[dict] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                       "body": json.loads(body) if body else None})
                status, payload, delay, headers = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                if delay:
                    outer.release.wait(delay)
                trickle = float(headers.get("X-Trickle", 0))  # seconds between the body's bytes
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if not trickle:
                        self.wfile.write(payload)
                    for i in range(len(payload) if trickle else 0):
                        self.wfile.write(payload[i:i + 1])
                        self.wfile.flush()
                        if outer.release.wait(trickle):
                            return
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST  # recorded too: a followed redirect arrives as a GET

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("LIBRAGEN_API_KEY", KEY)
    s = Server()
    yield s
    s.close()


def run(server, script, **options):
    server.script = list(script)
    options = {"url": server.url, "model": "tiny-chat", "timeout": 0.5, "retries": 2, "backoff": 0.01} | options
    return rewrite(LABELS, PROMPT, backend="http", style_guide="spriteworld", **options)


def test_valid_answer_is_used_and_the_key_goes_as_a_bearer_header(server, tmp_path):
    result = run(server, [(200, chat_reply(GOOD), 0, {})], cache=tmp_path / "cache")
    assert result.backend_used == "http" and result.warnings == ()
    assert result.video_line == GOOD
    assert caption_facts(result.prompt)["motions"] == {0: "spin_cw", 1: "bounce"}
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "tiny-chat" and body["temperature"] == 0 and body["stream"] is False
    assert body["messages"][0]["role"] == "system" and "Ref k[" in body["messages"][0]["content"]
    assert PROMPT in body["messages"][1]["content"] and "Ref 2: a red circle." in body["messages"][1]["content"]
    # cached: the same inputs never reach the server again
    again = run(server, [(500, b"", 0, {})], cache=tmp_path / "cache")
    assert again == result and len(server.requests) == 1


def test_no_key_in_the_environment_sends_no_authorization(server, monkeypatch):
    monkeypatch.delenv("LIBRAGEN_API_KEY")
    assert run(server, [(200, chat_reply(GOOD), 0, {})]).backend_used == "http"
    assert "Authorization" not in server.requests[0]["headers"]


def test_custom_key_variable(server, monkeypatch):
    monkeypatch.setenv("MY_LLM_TOKEN", "other-token")
    run(server, [(200, chat_reply(GOOD), 0, {})], api_key_env="MY_LLM_TOKEN")
    assert server.requests[0]["headers"]["Authorization"] == "Bearer other-token"
    with pytest.raises(ConfigError, match="NAME of an environment variable"):
        run(server, [(200, chat_reply(GOOD), 0, {})], api_key_env="Bearer sk-abc")


def test_slow_replies_time_out_retry_then_fall_back(server, caplog):
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="libragen.rewrite"):
        result = run(server, [(200, chat_reply(GOOD), 2.0, {})], timeout=0.3, retries=2)
    assert time.monotonic() - start < 2.5
    assert len(server.requests) == 3
    assert result.backend_used == "offline (fallback)"
    assert any("no answer within 0.3 s" in w and "used the offline rewrite" in w for w in result.warnings)
    assert "used the offline rewrite" in caplog.text
    assert caption_facts(result.prompt)["motions"] == {0: "spin_cw", 1: "bounce"}


def test_slow_then_fast_succeeds_on_retry(server):
    result = run(server, [(200, chat_reply(GOOD), 2.0, {}), (200, chat_reply(GOOD), 0, {})], timeout=0.3)
    assert result.backend_used == "http" and len(server.requests) == 2
    assert any("no answer within" in w and "retried" in w for w in result.warnings)


def test_500_is_retried_with_backoff_then_falls_back(server):
    start = time.monotonic()
    result = run(server, [(500, b'{"error": "boom"}', 0, {})], retries=2, backoff=0.1)
    assert len(server.requests) == 3 and time.monotonic() - start >= 0.1 + 0.2
    assert result.backend_used == "offline (fallback)"
    assert any("HTTP 500" in w for w in result.warnings)


def test_429_honours_retry_after_and_then_succeeds(server):
    start = time.monotonic()
    result = run(server, [(429, b'{"error": "slow down"}', 0, {"Retry-After": "0.4"}),
                          (200, chat_reply(GOOD), 0, {})])
    assert time.monotonic() - start >= 0.4
    assert result.backend_used == "http" and len(server.requests) == 2


def test_client_errors_are_not_retried(server):
    result = run(server, [(401, b'{"error": "bad key"}', 0, {})])
    assert len(server.requests) == 1 and result.backend_used == "offline (fallback)"
    assert any("HTTP 401" in w and "LIBRAGEN_API_KEY" in w for w in result.warnings)
    # a key given where the variable's NAME belongs (it has a name's shape): the hint blanks it out
    pasted = "hf_" + "a1B2" * 9
    result = run(server, [(401, b"{}", 0, {})], api_key_env=pasted, model="m2")
    assert any("the [redacted] environment variable" in w for w in result.warnings), result.warnings
    assert pasted not in repr(result)


@pytest.mark.parametrize("payload, reason", [
    (b"<html>not json</html>", "did not answer with JSON"),
    (json.dumps({"id": "x", "object": "chat.completion"}).encode(), "without choices"),
    (json.dumps({"choices": []}).encode(), "without choices"),
    (chat_reply("Sure! Here is your prompt: a star spinning."), "no 'Video: ' line"),
    (chat_reply("Video: Ref 1[the blue star] spins clockwise on a sky blue gradient."), "never appear"),
    (chat_reply("Video: Ref 1[the blue star] dances wildly while Ref 2[the red circle] bounces up and down on a "
                "sky blue gradient."), "outside the caption grammar"),
    (chat_reply(""), "empty text"),
])
def test_malformed_replies_fall_back_at_once(server, payload, reason):
    result = run(server, [(200, payload, 0, {})])
    assert len(server.requests) == 1
    assert result.backend_used == "offline (fallback)"
    assert any(reason in w for w in result.warnings), result.warnings
    assert caption_facts(result.prompt)["motions"] == {0: "spin_cw", 1: "bounce"}


def test_unreachable_endpoint_falls_back(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = rewrite(LABELS, PROMPT, backend="http", url=f"http://127.0.0.1:{port}", model="m", timeout=0.3,
                     retries=1, backoff=0.01, style_guide="spriteworld")
    assert result.backend_used == "offline (fallback)" and any("connection failed" in w for w in result.warnings)


def test_endpoint_urls():
    assert endpoint_url("http://127.0.0.1:11434/v1") == "http://127.0.0.1:11434/v1/chat/completions"
    assert endpoint_url("http://h:1/v1/chat/completions/") == "http://h:1/v1/chat/completions"
    for bad in ("", "ftp://h/v1", "127.0.0.1:1234", "http://user:pw@h/v1"):
        with pytest.raises(ConfigError):
            endpoint_url(bad)


def test_vision_captioner_sends_the_image_as_a_data_url(server):
    server.script = [(200, chat_reply("a blue star with orange stripes."), 0, {})]
    captioner = HTTPCaptioner(server.url, "vision-model", timeout=1.0, retries=0)
    image = np.zeros((16, 16, 3), np.uint8)
    image[4:12, 4:12] = (40, 85, 220)
    result = rewrite(["the blue star"], "the star spins clockwise", style_guide="spriteworld", captioner=captioner,
                     images=[image])
    assert result.ref_lines == ("Ref 1: a blue star with orange stripes.",)
    content = server.requests[0]["body"]["messages"][0]["content"]
    url = next(p["image_url"]["url"] for p in content if p["type"] == "image_url")
    assert url.startswith("data:image/png;base64,")
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    server.script = [(500, b"", 0, {})]
    result = rewrite(["the blue star"], "the star spins clockwise", style_guide="spriteworld", captioner=captioner,
                     images=[image])
    assert result.ref_lines == ("Ref 1: a blue star.",) and any("captioner failed" in w for w in result.warnings)


def _pack_node():
    from tests.pack import load_pack

    return load_pack().NODE_CLASS_MAPPINGS["LibraGenPromptRewrite"]


def test_the_key_is_written_nowhere(server, tmp_path, caplog, capsys, monkeypatch):
    """Everything the rewriter writes or says, across success, retries and fallbacks: no key."""
    from libragen_core.cli import main

    cache = tmp_path / "cache"
    out = tmp_path / "out"
    out.mkdir()
    results = []
    with caplog.at_level(logging.DEBUG):
        results.append(run(server, [(200, chat_reply(GOOD), 0, {})], cache=cache))
        results.append(run(server, [(500, b"", 0, {})], cache=cache, model="other"))
        results.append(run(server, [(401, b"", 0, {})], cache=cache, model="third"))
        results.append(run(server, [(200, b"nope", 0, {})], cache=cache, model="fourth"))
        server.script = [(200, chat_reply(GOOD), 0, {})]
        rc = main(["rewrite", "--label", LABELS[0], "--label", LABELS[1], "--prompt", PROMPT, "--backend", "http",
                   "--url", server.url, "--model", "cli-model", "--style-guide", "spriteworld", "--cache-dir",
                   str(cache), "--out", str(out / "rewrite.json"), "--json"])
        assert rc == 0
        # an endpoint that sends the key back: blanked out of the warning
        echoed = run(server, [(200, f"you sent Bearer {KEY}".encode(), 0, {})], cache=cache, model="fifth")
        assert any("did not answer with JSON" in w and REDACTED in w for w in echoed.warnings), echoed.warnings
        results.append(echoed)
        # the node, as a saved API-format workflow would run it, with its output written out; its
        # endpoints are the server's configuration, here in the environment variable
        node = _pack_node()
        monkeypatch.setenv("LIBRAGEN_REWRITE_CACHE", str(tmp_path / "node_cache"))
        monkeypatch.setenv(ENDPOINTS_ENV, json.dumps({"endpoints": {
            name: {"url": server.url, "model": f"node-{name}", "api_key_env": "LIBRAGEN_API_KEY"}
            for name in ("a", "b", "c")}}))
        inputs = {"prompt": PROMPT, "backend": "http", "style_guide": "spriteworld", "labels": "\n".join(LABELS),
                  "timeout": 1.0, "retries": 0, "use_cache": True}
        for name, script in (("a", [(200, chat_reply(GOOD), 0, {})]), ("b", [(503, b"", 0, {})]),
                             ("c", [(200, f"Bearer {KEY}".encode(), 0, {})])):
            server.script = script
            (out / f"workflow_api_{name}.json").write_text(json.dumps({"1": {"class_type": "LibraGenPromptRewrite",
                                                                           "inputs": inputs | {"endpoint": name}}}))
            shown = node().rewrite(**inputs, endpoint=name)
            (out / f"node_{len(server.requests)}.json").write_text(json.dumps(shown, ensure_ascii=False))
            assert shown["result"][1].startswith("backend: offline (fallback)" if name != "a" else "backend: http")
        assert REDACTED in shown["result"][1]
    captured = capsys.readouterr()
    assert len(server.requests) >= 5
    assert all(r["headers"].get("Authorization") == f"Bearer {KEY}" for r in server.requests)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" for p in cache.rglob("*")) and (out / "rewrite.json").is_file()
    assert list((tmp_path / "node_cache").rglob("*.json"))
    texts = [p.read_bytes().decode("utf-8", "replace") for p in written]
    texts += [caplog.text, captured.out, captured.err, *(repr(r) for r in results)]
    texts += [json.dumps(r.to_dict()) for r in results]
    for text in texts:
        assert KEY not in text and "SECRET" not in text


def test_query_strings_never_show_in_messages(server):
    server.script = [(500, b"", 0, {})]
    result = rewrite(LABELS, PROMPT, backend="http", url=server.url + "?token=abc123", model="m", timeout=0.5,
                     retries=0, style_guide="spriteworld")
    assert result.backend_used == "offline (fallback)"
    assert server.requests[0]["path"] == "/v1/chat/completions?token=abc123"
    assert not any("abc123" in w for w in result.warnings)


# ---------------------------------------------------------------- cancelling and time limits

class Stop(Exception):
    """What a host's own interrupt raises (ComfyUI's is InterruptProcessingException)."""


def _stopper(after: float, raises: bool = False):
    start = time.monotonic()

    def should_stop():
        if time.monotonic() - start < after:
            return False
        if raises:
            raise Stop("interrupted")
        return True

    return should_stop


@pytest.mark.parametrize("raises", [False, True])
def test_a_stalled_request_is_cancelled_within_a_poll(server, raises):
    server.script = [(200, chat_reply(GOOD), 30.0, {})]  # answers after 30 s
    engine = HTTPBackend(server.url, "m", timeout=600, retries=5, should_stop=_stopper(0.3, raises))
    start = time.monotonic()
    with pytest.raises(Stop if raises else Cancelled):
        rewrite(LABELS, PROMPT, backend=engine, style_guide="spriteworld")  # no offline fallback: it stops
    took = time.monotonic() - start
    assert took < 1.0, took
    assert len(server.requests) == 1


def test_the_backoff_is_cancelled_too(server):
    server.script = [(429, b"{}", 0, {"Retry-After": "10"})]
    client = ChatClient(server.url, "m", timeout=5, retries=5, should_stop=_stopper(0.4))
    start = time.monotonic()
    with pytest.raises(Cancelled, match="was cancelled"):
        client.chat([{"role": "user", "content": "x"}])
    assert time.monotonic() - start < 1.0 and len(server.requests) == 1


def test_the_timeout_limits_the_whole_attempt(server):
    # a reply that comes one byte every 0.2 s never trips a socket timeout of 0.5 s, yet the
    # attempt as a whole is cut at 0.5 s
    payload = chat_reply(GOOD)
    server.script = [(200, payload, 0, {"X-Trickle": "0.2"})]
    start = time.monotonic()
    result = run(server, server.script, timeout=0.5, retries=0)
    assert time.monotonic() - start < 1.5
    assert result.backend_used == "offline (fallback)"
    assert any("no answer within 0.5 s" in w for w in result.warnings), result.warnings


def test_redirects_are_refused_and_the_key_never_follows(server, monkeypatch):
    other = Server()
    try:
        other.script = [(200, chat_reply(GOOD), 0, {})]
        result = run(server, [(307, b"", 0, {"Location": other.url + "/chat/completions"})])
        assert result.backend_used == "offline (fallback)" and any("HTTP 307" in w for w in result.warnings)
        result = run(server, [(302, b"", 0, {"Location": other.url + "/chat/completions"})], model="m2")
        assert [(r["method"], r["headers"].get("Authorization")) for r in other.requests] == []
        assert any("HTTP 302" in w for w in result.warnings)
    finally:
        other.close()


def test_an_oversized_reply_is_refused(server):
    result = run(server, [(200, b" " * ((4 << 20) + 1), 0, {})], timeout=5)
    assert any("more than 4 MiB" in w for w in result.warnings), result.warnings


def test_configured_endpoints_are_named_and_fail_alike(server, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("LIBRAGEN_TEST_KEY", KEY)
    server.script = [(200, chat_reply(GOOD), 0, {})]
    ok = HTTPBackend.configured(Endpoint("local", server.url, "m", "LIBRAGEN_TEST_KEY"), timeout=2, retries=0)
    assert rewrite(LABELS, PROMPT, backend=ok, style_guide="spriteworld").backend_used == "http"
    assert server.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"
    # no api_key_env: no key, even with LIBRAGEN_API_KEY set
    keyless = HTTPBackend.configured(Endpoint("keyless", server.url, "m2"), timeout=2, retries=0)
    rewrite(LABELS, PROMPT, backend=keyless, style_guide="spriteworld")
    assert "Authorization" not in server.requests[-1]["headers"]
    # what a failure says names the endpoint, never its URL, and reads the same for any cause
    shown = []
    for url in (f"http://127.0.0.1:{closed}/v1", "http://no-such-host.invalid/v1"):
        engine = HTTPBackend.configured(Endpoint("e", url, "m"), timeout=2, retries=1, backoff=0.01)
        (warning,) = rewrite(LABELS, PROMPT, backend=engine, style_guide="spriteworld").warnings[:1]
        assert "127.0.0.1" not in warning and "invalid" not in warning
        shown.append(warning)
    assert shown[0] == shown[1] and "endpoint 'e' gave no usable answer after 2 attempts" in shown[0]
    server.script = [(401, b"", 0, {})]
    engine = HTTPBackend.configured(Endpoint("e", server.url, "m", "LIBRAGEN_TEST_KEY"), timeout=2, retries=0)
    (warning,) = rewrite(LABELS, PROMPT, backend=engine, style_guide="spriteworld").warnings[:1]
    assert "endpoint 'e' answered HTTP 401" in warning and "LIBRAGEN_TEST_KEY" not in warning
    assert str(server.url) not in warning


# ---------------------------------------------------------------- the server's endpoint configuration

CONFIG = {"endpoints": {"ollama": {"url": "http://127.0.0.1:11434/v1", "model": "qwen2.5:7b-instruct"},
                        "openai": {"url": "https://api.example.com/v1", "model": "gpt-x",
                                   "api_key_env": "OPENAI_API_KEY"}}}


def test_endpoints_from_the_default_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(ENDPOINTS_ENV, raising=False)
    path = tmp_path / "rewrite_endpoints.json"
    assert load_endpoints(path) == {} and load_endpoints(None) == {}  # no file: no endpoints
    path.write_text(json.dumps(CONFIG))
    got = load_endpoints(path)
    assert list(got) == ["ollama", "openai"]  # the owner's order
    assert got["ollama"] == Endpoint("ollama", "http://127.0.0.1:11434/v1", "qwen2.5:7b-instruct", None)
    assert got["openai"].api_key_env == "OPENAI_API_KEY"
    monkeypatch.setenv("OPENAI_API_KEY", " k-123 ")
    assert got["openai"].key() == "k-123" and got["ollama"].key() == ""
    # the variable wins over the default file: inline JSON, or a file path
    monkeypatch.setenv(ENDPOINTS_ENV, json.dumps({"endpoints": {"other": {"url": "http://h:1", "model": "m"}}}))
    assert list(load_endpoints(path)) == ["other"]
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({"endpoints": {}}))
    monkeypatch.setenv(ENDPOINTS_ENV, str(other))
    assert load_endpoints(path) == {}


BAD_CONFIGS = [
    ('{"endpoints": {"a": {"url": "http://h/v1", "model": "m",}}}', "is not valid JSON (line 1, column",
     "fix it"),
    ('[1, 2]', "must hold one object", '{"endpoints"'),
    ('{"endpoints": {"a": {"url": "http://h/v1", "model": "m", "api_key": "sk-live-0123456789abcdefXYZ"}}}',
     "endpoint 'a' has unknown field(s) 'api_key'", "put that variable's NAME in api_key_env"),
    ('{"endpoints": {"a": {"url": "ftp://user:pw@h/v1", "model": "m"}}}', "endpoint 'a': url must be an http://",
     "fix it in the file"),
    ('{"endpoints": {"a": {"url": "http://h/v1"}}}', "endpoint 'a': model must name", "qwen2.5"),
    ('{"endpoints": {"a": {"url": "http://h/v1", "model": "m", "api_key_env": "sk-live-0123456789abcdefXYZ"}}}',
     "api_key_env must be the NAME of an environment variable", "before starting the server"),
    ('{"endpoints": {"../etc": {"url": "http://h/v1", "model": "m"}}}', "endpoint names are 1-64 letters",
     "rename"),
    ('{"endpoints": {"a": "http://h/v1"}}', "endpoint 'a' must be an object with url and model", '"url"'),
]


@pytest.mark.parametrize("text, problem, fix", BAD_CONFIGS)
def test_a_bad_configuration_names_the_file_and_the_fix(tmp_path, monkeypatch, text, problem, fix):
    monkeypatch.delenv(ENDPOINTS_ENV, raising=False)
    path = tmp_path / "rewrite_endpoints.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_endpoints(path)
    message = str(e.value)
    assert message.startswith(str(path)) and problem in message and fix in message, message
    assert "sk-live" not in message and "user:pw" not in message and "ftp://" not in message
    # the same through the environment variable, named in the message
    monkeypatch.setenv(ENDPOINTS_ENV, text)
    if text.lstrip().startswith("{"):
        with pytest.raises(ConfigError, match=f"the environment variable {ENDPOINTS_ENV}"):
            load_endpoints(None)


def test_configuration_files_that_cannot_be_read(tmp_path, monkeypatch):
    monkeypatch.setenv(ENDPOINTS_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match=f"missing.json \\(named by {ENDPOINTS_ENV}\\) does not exist.*unset"):
        load_endpoints(None)
    monkeypatch.delenv(ENDPOINTS_ENV)
    path = tmp_path / "latin1.json"
    path.write_bytes('{"endpoints": {"caf\xe9": 1}}'.encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text; save it as UTF-8"):
        load_endpoints(path)


# ---------------------------------------------------------------- redaction

KEYS = ["sk-proj-AbC123dEf456GhI789jKl0", "sk-test-SECRET-7f3a9c1e5b", "hf_" + "aB3" * 11,
        "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6", "xoxb-123456789012-abcdefABCDEF", "AKIAIOSFODNN7EXAMPLE",
        "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "glpat-xY12zW34vU56tS78rQ90",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "3f9a0c7e1b2d4f6a8c0e2b4d6f8a0c1e", "Bearer q7Wx9zP2r", "api_key=A1b2C3d4e5"]
PROMPTS = ["make the blue star zig-zag to the right", "I want the star to weave right and the red one to rotate "
           "clockwise, camera panning left", "the ring bearer walks down the aisle holding the token",
           "a dog runs along the beach at sunset in 4K, 24 fps, shot on a 35mm lens",
           "Ref 1: a large blue star with orange stripes and a white dot.",
           "the token disappears behind the password-protected door", "柴犬が海辺を走る 🐕",
           "http://127.0.0.1:11434/v1/chat/completions"]


def test_key_shapes_are_found_and_prompts_are_not():
    from libragen_core.spriteworld.captions import scene_caption, user_prompts
    from libragen_core.spriteworld.scene import sample_scene

    for key in KEYS:
        assert looks_like_key(key) and looks_like_key(f"my key is {key}, ok"), key
        assert key.split()[-1].split("=")[-1] not in redact(f"x {key} y"), key
    texts = list(PROMPTS)
    for i in range(100):  # SpriteWorld captions and every user phrasing of them, as the rewriter meets them
        scene = sample_scene(np.random.default_rng([16, i]), split="heldout" if i % 3 == 0 else "train")
        texts += [scene_caption(scene), *user_prompts(scene, "train"), *user_prompts(scene, "heldout")]
    for text in texts:
        assert not looks_like_key(text), text
        assert redact(text) == text
    assert not looks_like_key(None) and not looks_like_key(12)


def test_redact_blanks_the_given_secrets_whatever_their_shape():
    secret = "plainwords"  # no key shape: only the exact value catches it
    assert redact(f"got {secret} back", [secret]) == f"got {REDACTED} back"
    assert redact("short abc", ["abc"]) == "short abc"  # values under 4 characters are ignored


def test_https_endpoints_verify_the_certificate(tmp_path, monkeypatch):
    """The https path (its own connection class, so it can be cut) against a TLS server with a
    self-signed certificate: refused while the certificate is not trusted, used once it is."""
    import shutil
    import ssl
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    monkeypatch.setenv("LIBRAGEN_API_KEY", KEY)
    tls = Server()
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        tls.httpd.socket = context.wrap_socket(tls.httpd.socket, server_side=True)
        url = tls.url.replace("http://", "https://")
        tls.script = [(200, chat_reply(GOOD), 0, {})]
        refused = rewrite(LABELS, PROMPT, backend="http", url=url, model="m", timeout=3, retries=0,
                          style_guide="spriteworld")
        assert refused.backend_used == "offline (fallback)" and tls.requests == []
        assert any("connection failed" in w for w in refused.warnings), refused.warnings
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now trusted, as a system CA would be
        used = rewrite(LABELS, PROMPT, backend="http", url=url, model="m", timeout=3, retries=0,
                       style_guide="spriteworld")
        assert used.backend_used == "http", used.warnings
        assert tls.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    finally:
        tls.close()
