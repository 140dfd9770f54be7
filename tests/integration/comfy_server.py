"""One real ComfyUI server for the node-pack integration tests, set up as a new user's would be.

Both test_nodes_server.py and test_workflows_server.py use the same server: it starts on first
use and is stopped when the pytest session ends (config cleanup), also after failures. It runs
the configured checkout's main.py with --base-directory DIR, a private folder: its own models/,
input/, user/ and a custom_nodes/ holding this repository alone. Other sessions run servers from
the same checkout at the same time (and link their own packs into its custom_nodes), so a shared
folder would mix their node packs, model files, pid files and outputs. Log, pid file and outputs
are DIR/server-PORT.log, DIR/server-PORT.pid, DIR/output-PORT/.
What docs/comfyui.md tells a new user to copy is put in place before the tests run, and nothing
else: examples/refs/*.png into input (uploaded) and examples/loras/*.safetensors into models/loras.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_LORAS = tuple(sorted(p.name for p in (REPO / "examples" / "loras").glob("*.safetensors")))
EXAMPLE_LORA = "libragen-sprite_sft_in.safetensors"  # one of them, for tests that need a LoRA file
INPUT_IMAGES = ("red_circle.png", "blue_striped_star.png")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port() -> int:
    wanted = os.environ.get("LIBRAGEN_COMFY_PORT")
    if wanted and _port_free(int(wanted)):
        return int(wanted)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_example_loras(loras_dir: Path) -> None:
    """Copy examples/loras/*.safetensors into a models/loras folder, as the docs tell users to."""
    loras_dir.mkdir(parents=True, exist_ok=True)
    for name in EXAMPLE_LORAS:
        shutil.copyfile(REPO / "examples" / "loras" / name, loras_dir / name)


def write_example_lora(path: Path, seed: int = 0) -> Path:
    """A small real LoRA (ComfyUI Wan naming) for the embedded model's DiT shapes."""
    import torch

    from libragen_core.lora import LoraFactors, LoraWeights, save_lora
    from libragen_core.models.bundle import PLACEHOLDER_DIT as c

    g = torch.Generator().manual_seed(seed)
    shapes = {"blocks.0.self_attn.q": (c.dim, c.dim), "blocks.1.cross_attn.k": (c.dim, c.dim),
              "blocks.2.ffn.0": (c.ffn_dim, c.dim), "blocks.3.self_attn.o": (c.dim, c.dim)}
    factors = {name: LoraFactors(down=torch.randn(4, n_in, generator=g) * 0.1,
                                 up=torch.randn(n_out, 4, generator=g) * 0.1, alpha=4.0)
               for name, (n_out, n_in) in shapes.items()}
    return save_lora(LoraWeights(factors=factors), path)


@dataclass
class Server:
    dir: Path  # the private base directory
    port: int
    checkout: Path  # the ComfyUI source it runs
    proc: subprocess.Popen | None = None
    created: list[Path] = field(default_factory=list)  # files a test put in place, removed by stop()

    @property
    def comfy_dir(self) -> Path:
        """Where this server's models/ and input/ are (its --base-directory)."""
        return self.dir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output_dir(self) -> Path:
        return self.dir / f"output-{self.port}"

    @property
    def log(self) -> Path:
        return self.dir / f"server-{self.port}.log"

    def pid(self) -> int:
        return int((self.dir / f"server-{self.port}.pid").read_text().strip())

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.url + path, timeout=30, **kw)

    def submit(self, workflow: dict, client_id: str | None = None) -> requests.Response:
        return self.post("/prompt", json={"prompt": workflow, "client_id": client_id or uuid.uuid4().hex})

    def wait(self, prompt_id: str, timeout: float = 240) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            history = self.get(f"/history/{prompt_id}").json()
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                if history[prompt_id]["status"].get("status_str") in ("success", "error"):
                    return history[prompt_id]
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s; server log: {self.log}")

    def run(self, workflow: dict, timeout: float = 240) -> dict:
        r = self.submit(workflow)
        assert r.status_code == 200, f"the server refused the workflow: {r.text[:3000]}"
        return self.wait(r.json()["prompt_id"], timeout)

    def interrupt(self, prompt_id: str, timeout: float = 120) -> tuple[dict, float]:
        """POST /interrupt, then the prompt's history entry and the seconds it took to end."""
        started = time.monotonic()
        assert self.post("/interrupt").ok
        entry = self.wait(prompt_id, timeout)
        return entry, time.monotonic() - started

    def running(self) -> bool:
        queue = self.get("/queue").json()
        return bool(queue.get("queue_running"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for path in self.created:
            path.unlink(missing_ok=True)
        if not os.environ.get("LIBRAGEN_KEEP_COMFY_DIR"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def progress(self, client_id: str, prompt_id: str, node: str, at_least: int = 1, timeout: float = 180) -> None:
        """Block until the websocket reports node `node` of the prompt at step >= at_least."""
        import websocket

        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        try:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                msg = ws.recv()
                if not isinstance(msg, str):
                    continue  # binary preview frames
                data = json.loads(msg)
                d = data.get("data", {})
                if (data.get("type") == "progress" and d.get("prompt_id") == prompt_id and d.get("node") == node
                        and d.get("value", 0) >= at_least):
                    return
        finally:
            ws.close()
        raise AssertionError(f"no progress from node {node} of prompt {prompt_id} in {timeout} s")


_SERVER: Server | None = None


def shared_server(comfyui, config) -> Server:
    """Start the server once per pytest session; stopped by config cleanup."""
    global _SERVER
    if _SERVER is not None:
        return _SERVER
    base = Path(tempfile.mkdtemp(prefix="libragen-comfy-"))
    copy_example_loras(base / "models" / "loras")
    server = private_server(comfyui, base, {REPO.name: REPO})
    config.add_cleanup(server.stop)
    failed = [line for line in server.log.read_text().splitlines() if "IMPORT FAILED" in line and REPO.name in line]
    assert not failed, server.log.read_text()[-3000:]
    for name in INPUT_IMAGES:
        with open(REPO / "examples" / "refs" / name, "rb") as fh:
            r = server.post("/upload/image", files={"image": (name, fh, "image/png")}, data={"overwrite": "true"})
        assert r.ok, r.text
    _SERVER = server
    return server


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def private_server(comfyui, base: Path, packs: dict[str, Path], timeout: float = 300,
                   env: dict | None = None, user_files: dict | None = None) -> Server:
    """Start a server whose base folder (--base-directory) is `base`: its own custom_nodes holding
    exactly `packs` (folder name -> pack folder, linked), models, input, output and user folders.
    env: extra environment variables of the server process; user_files: {path relative to the user
    folder: text} written before it starts.

    Nothing is linked into the configured checkout's custom_nodes, so what the server loads is
    known (other sessions link their own checkouts there). Stop it with Server.stop(), which also
    deletes `base`."""
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    for name, folder in packs.items():
        (base / "custom_nodes" / name).symlink_to(folder)
    for sub in ("models/loras", "models/diffusion_models", "models/vae", "models/text_encoders", "input"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for rel, text in (user_files or {}).items():
        (base / "user" / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / "user" / rel).write_text(text)
    server = Server(dir=base, port=pick_port(), checkout=Path(comfyui.dir).resolve())
    with open(server.log, "w") as log:  # a file: a pipe would stay open in the detached server
        server.proc = subprocess.Popen(
            [str(comfyui.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(server.port),
             "--base-directory", str(base), "--output-directory", str(server.output_dir)],
            cwd=server.checkout, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=dict(os.environ, **(env or {})))
    (base / f"server-{server.port}.pid").write_text(str(server.proc.pid))
    end = time.monotonic() + timeout
    while time.monotonic() < end and server.proc.poll() is None:
        try:
            if server.get("/object_info").ok:
                return server
        except requests.RequestException:
            pass
        time.sleep(1)
    log = server.log.read_text()[-3000:] if server.log.exists() else "(no log)"
    server.stop()
    raise AssertionError(f"the private ComfyUI server did not answer in {timeout} s (exit code {server.proc.poll()}):\n{log}")
