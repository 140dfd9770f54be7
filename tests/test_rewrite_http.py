"""HTTP rewrite backend against a real chat-completions server on 127.0.0.1 (http.server in a
thread): success, slow replies, 5xx/429 retries, malformed replies, fallback, and the API key's
path (sent as a Bearer header, found nowhere else)."""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from libragen_core.errors import ConfigError
from libragen_core.rewrite import rewrite
from libragen_core.rewrite.http_backend import HTTPCaptioner, endpoint_url
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
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                status, payload, delay, headers = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                if delay:
                    outer.release.wait(delay)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

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
    assert result.backend_used == "offline (fallback)" and any("cannot connect" in w for w in result.warnings)


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
        # the node, as a saved API-format workflow would run it, with its output written out
        node = _pack_node()
        monkeypatch.setenv("LIBRAGEN_REWRITE_CACHE", str(tmp_path / "node_cache"))
        inputs = {"prompt": PROMPT, "backend": "http", "style_guide": "spriteworld", "labels": "\n".join(LABELS),
                  "endpoint_url": server.url, "endpoint_model": "node-model", "api_key_env": "LIBRAGEN_API_KEY",
                  "timeout": 1.0, "retries": 0, "use_cache": True}
        (out / "workflow_api.json").write_text(json.dumps({"1": {"class_type": "LibraGenPromptRewrite",
                                                                 "inputs": inputs}}))
        for script in ([(200, chat_reply(GOOD), 0, {})], [(503, b"", 0, {})]):
            server.script = script
            inputs["endpoint_model"] += "x"
            shown = node().rewrite(**inputs)
            (out / f"node_{len(server.requests)}.json").write_text(json.dumps(shown, ensure_ascii=False))
        assert shown["result"][1].startswith("backend: offline (fallback)")
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
