"""Spread jobs over one or more ComfyUI servers: one worker thread per server slot pulls the next
job from a shared queue, so a fast or idle server simply takes more. A job whose server dropped
goes back to the front of the queue (another server, or the same once it answers again) up to
`retries` times; a job the server failed is recorded as failed and not retried in this run."""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Cancelled, LibraGenError
from .client import (
    ComfyClient,
    JobFailed,
    ServerDown,
    describe_missing_outputs,
    finished_nodes,
    normalize_server_url,
    output_refs,
)
from .jobs import Job, ResolvedJob, bind_uploads, resolve_job
from .manifest import DONE, FAILED, PENDING, RUNNING, Manifest, now_iso
from .outputs import JobFolder, clean_stale_staging, safe_filename, unique_name


class AllServersDown(LibraGenError):
    """No server could take jobs for longer than the allowed wait."""


@dataclass
class BatchOptions:
    retries: int = 3  # re-runs of a job after its server dropped (not after the job itself failed)
    timeout: float | None = None  # per job, from queueing to the end of execution
    per_server: int = 1  # jobs kept in flight per server; 2 hides upload/download time
    server_wait: float = 120.0  # give up when no server answered for this long
    include_temp: bool = False  # also download PreviewImage-style temp files
    poll_interval: float = 2.0
    request_timeout: float = 30.0


class Progress:
    """Receives what the batch is doing; the CLI draws bars from it. Methods may be called from
    worker threads."""

    def start(self, to_run: int, skipped: int, slots: list[str]) -> None: ...
    def job_started(self, slot: int, job_id: str, server: str) -> None: ...
    def job_step(self, slot: int, job_id: str, node: str, value: int, total: int) -> None: ...
    def job_finished(self, slot: int, job_id: str, status: str, detail: str) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


@dataclass
class Summary:
    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    pending: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)


class _Server:
    def __init__(self, url: str):
        self.url = url
        self.down_since: float | None = None
        self.excluded: str | None = None


class BatchRunner:
    def __init__(self, workflow: dict, jobs: list[Job], servers: list[str], out_dir: str | Path,
                 options: BatchOptions | None = None, progress: Progress | None = None,
                 run_info: dict | None = None):
        self.workflow = workflow
        self.jobs = jobs
        urls = [normalize_server_url(s) for s in servers]
        if not urls:
            raise LibraGenError("no --server given; pass at least one ComfyUI address")
        self.servers = [_Server(u) for u in dict.fromkeys(urls)]
        self.out_dir = Path(out_dir)
        self.opts = options or BatchOptions()
        self.progress = progress or Progress()
        self.run_info = run_info or {}
        self._queue: collections.deque[ResolvedJob] = collections.deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._drops: dict[str, int] = {}
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self.summary = Summary()

    # -- public ----------------------------------------------------------------------------------
    def run(self) -> Summary:
        t0 = time.monotonic()
        self.out_dir.mkdir(parents=False, exist_ok=True)
        clean_stale_staging(self.out_dir)
        hashes: dict = {}
        resolved = [resolve_job(self.workflow, job, hashes) for job in self.jobs]
        self.manifest = Manifest.open(self.out_dir, **self.run_info,
                                      servers=[s.url for s in self.servers], last_run_started=now_iso())
        s = self.summary
        s.total = len(resolved)
        for r in resolved:
            if self.manifest.is_finished(r.job.id, r.fingerprint):
                s.skipped += 1
                continue
            self._queue.append(r)
            self.manifest.update(r.job.id, write=False, status=PENDING, line=r.job.line,
                                 fingerprint=r.fingerprint, attempts=0, server=None, prompt_id=None,
                                 outputs=[], error=None, missing_outputs=None)
        self.manifest.save()
        slots = [(srv, k) for srv in self.servers for k in range(max(1, self.opts.per_server))]
        self.progress.start(len(self._queue), s.skipped, [srv.url for srv, _ in slots])
        try:
            if self._queue:
                self._run_workers(slots)
        finally:
            self.progress.close()
            self.manifest.update_run(last_run_finished=now_iso())
            counts = self.manifest.counts_for([r.job.id for r in resolved])
            s.done = counts.get(DONE, 0) - s.skipped
            s.failed = counts.get(FAILED, 0)
            s.pending = counts.get(PENDING, 0) + counts.get(RUNNING, 0)
            s.elapsed_s = time.monotonic() - t0
        if self._fatal is not None:
            raise self._fatal
        return s

    # -- threads ---------------------------------------------------------------------------------
    def _run_workers(self, slots: list[tuple[_Server, int]]) -> None:
        # Wait on an Event, not Thread.join: on CPython 3.11 a Ctrl-C that lands inside join() can
        # mark a still-running thread as stopped, and the batch would exit without its cleanup.
        self._live = len(slots)
        self._all_exited = threading.Event()
        threads = [threading.Thread(target=self._worker_main, args=(srv, i), daemon=True,
                                    name=f"batch-{i}") for i, (srv, _) in enumerate(slots)]
        for t in threads:
            t.start()
        try:
            while not self._all_exited.wait(0.2):
                self._check_servers()
            if not self._finished():
                self._check_servers()  # every worker gave up on its server (e.g. node types missing)
        except BaseException:
            # Ctrl-C (or a fatal error here): workers cancel their prompts and put jobs back to pending
            self._stop.set()
            with self._cond:
                self._cond.notify_all()
            self._all_exited.wait(15.0)
            self.manifest.save()
            raise

    def _worker_main(self, server: _Server, slot: int) -> None:
        try:
            self._worker(server, slot)
        finally:
            with self._cond:
                self._live -= 1
                if self._live == 0:
                    self._all_exited.set()

    def _check_servers(self) -> None:
        if self._stop.is_set():
            return
        usable = [s for s in self.servers if s.excluded is None]
        if not usable:
            reasons = "; ".join(f"{s.url}: {s.excluded}" for s in self.servers)
            self._abort(AllServersDown(f"no server can run this workflow ({reasons})"))
            return
        now = time.monotonic()
        if all(s.down_since is not None for s in usable):
            waited = now - max(s.down_since for s in usable)
            if waited > self.opts.server_wait:
                self._abort(AllServersDown(
                    f"no server answered for {waited:.0f} s ({', '.join(s.url for s in usable)}); "
                    "unfinished jobs are marked pending in the manifest: start a server and rerun "
                    "the same command to resume"))

    def _abort(self, error: BaseException) -> None:
        if self._fatal is None:
            self._fatal = error
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def _finished(self) -> bool:
        with self._cond:
            return not self._queue and self._in_flight == 0

    def _take(self) -> ResolvedJob | None:
        with self._cond:
            while not self._stop.is_set():
                if self._queue:
                    self._in_flight += 1
                    return self._queue.popleft()
                if self._in_flight == 0:
                    return None
                self._cond.wait(0.5)
            return None

    def _release(self, job: ResolvedJob | None = None, requeue: bool = False) -> None:
        with self._cond:
            self._in_flight -= 1
            if requeue and job is not None:
                self._queue.appendleft(job)
            self._cond.notify_all()

    def _sleep(self, seconds: float) -> None:
        """Wait for a down server, waking early when the batch stops or has nothing left to do."""
        end = time.monotonic() + seconds
        while not self._stop.is_set() and not self._finished() and time.monotonic() < end:
            self._stop.wait(min(0.2, max(0.0, end - time.monotonic())))

    def _worker(self, server: _Server, slot: int) -> None:
        client = ComfyClient(server.url, self.opts.request_timeout, self.opts.poll_interval)
        ready, backoff = False, 0.5
        expected: list[str] = []  # the workflow's output nodes, read from the server with its node types
        try:
            while not self._stop.is_set():
                if server.down_since is not None:
                    ready = False  # a sibling slot saw this server drop: probe before taking a job
                if not ready:
                    if self._finished():
                        return
                    try:
                        missing, output_types = client.node_types({n["class_type"] for n in self.workflow.values()})
                    except ServerDown as e:
                        if server.down_since is None:
                            server.down_since = time.monotonic()
                            self.progress.message(f"{server.url} is unreachable ({e}); waiting for it")
                        self._sleep(backoff)
                        backoff = min(5.0, backoff * 2)
                        continue
                    if missing:
                        server.excluded = f"lacks node types {', '.join(missing)} (install them there)"
                        self.progress.message(f"{server.url} skipped: {server.excluded}")
                        return
                    if server.down_since is not None:
                        self.progress.message(f"{server.url} answers again")
                    server.down_since, ready, backoff = None, True, 0.5
                    expected = sorted((nid for nid, n in self.workflow.items() if n["class_type"] in output_types),
                                      key=lambda s: (len(s), s))
                job = self._take()
                if job is None:
                    return
                try:
                    self._run_job(client, server, slot, job, expected)
                    self._release()
                except ServerDown as e:
                    ready = False
                    client.reset()
                    if server.down_since is None:
                        server.down_since = time.monotonic()
                        self.progress.message(f"{server.url} dropped out; waiting for it to answer again")
                    self._dropped(job, server, str(e), slot)
                except JobFailed as e:
                    self._fail(job, server, str(e), slot, attempts=self._drops.get(job.job.id, 0) + 1)
                    self._release()
                except Cancelled:
                    self.manifest.update(job.job.id, status=PENDING, error="interrupted before it finished")
                    self._release()
                    return
                except BaseException as e:
                    # our own disk or a bug: stop the whole batch, keep the manifest truthful
                    self.manifest.update(job.job.id, status=PENDING, error=f"{type(e).__name__}: {e}")
                    self._release()
                    self._abort(e)
                    return
        finally:
            client.close()

    # -- one job ---------------------------------------------------------------------------------
    def _run_job(self, client: ComfyClient, server: _Server, slot: int, r: ResolvedJob,
                 expected: list[str]) -> None:
        """Queue, follow and download one job. `expected`: the workflow's output nodes; a job
        that ends without one of them (ComfyUI runs the valid branches of a partly refused graph
        and drops the rest) is failed, keeping the files it did produce."""
        jid = r.job.id
        t_start = time.monotonic()
        self.progress.job_started(slot, jid, server.url)
        attempts = self._drops.get(jid, 0) + 1
        uploaded = {sha: client.upload(sha, path) for sha, path in r.files.items()}
        prompt_id, node_errors = client.submit(bind_uploads(r.graph, uploaded))
        t_queued = time.monotonic()
        # one manifest write per state change keeps hundreds of jobs cheap (the file is rewritten whole)
        self.manifest.update(jid, status=RUNNING, server=server.url, prompt_id=prompt_id, attempts=attempts,
                             started=now_iso(), error=None)
        marks: dict[str, float] = {}
        ran: set[str] = set()

        def on_event(kind: str, data: dict) -> None:
            if kind == "start":
                marks["start"] = time.monotonic()
            elif kind == "node":
                ran.add(str(data.get("node")))
                self.progress.job_step(slot, jid, str(data.get("node")), 0, 0)
            elif kind == "progress":
                self.progress.job_step(slot, jid, str(data.get("node")), int(data.get("value", 0)),
                                       int(data.get("max", 0)))

        entry = client.wait(prompt_id, self.opts.timeout, self._stop.is_set, on_event)
        t_rendered = time.monotonic()
        refs = output_refs(entry, self.opts.include_temp)
        folder = JobFolder(self.out_dir, jid)
        outputs, taken = [], set()
        try:
            for ref in refs:
                name = unique_name(safe_filename(ref.filename, ref.subfolder), taken, f"node{ref.node}")
                taken.add(name)
                size = client.download(ref, folder.staging / name)
                outputs.append({"file": f"{jid}/{name}", "bytes": size, "node": ref.node, "kind": ref.kind,
                                "server_file": {"filename": ref.filename, "subfolder": ref.subfolder,
                                                "type": ref.type}})
            folder.commit()
        except BaseException:
            folder.discard()
            raise
        client.forget(prompt_id)
        t_end = time.monotonic()
        timings = {
            "upload_s": round(t_queued - t_start, 3),
            "queue_wait_s": round(marks["start"] - t_queued, 3) if "start" in marks else None,
            "render_s": round(t_rendered - marks.get("start", t_queued), 3),
            "download_s": round(t_end - t_rendered, 3),
            "total_s": round(t_end - t_start, 3),
        }
        refused = {str(o) for info in node_errors.values() for o in (info or {}).get("dependent_outputs") or []}
        produced = ran | finished_nodes(entry)
        missing = sorted({nid for nid in expected if nid not in produced} | refused, key=lambda s: (len(s), s))
        if missing:
            self._fail(r, server, describe_missing_outputs(r.graph, missing, node_errors), slot, attempts,
                       outputs=outputs, timings=timings, missing_outputs=missing)
            return
        note = None if refs else ("the workflow produced no output files (only temp previews?); "
                                  "add a Save node or pass --include-temp")
        self.manifest.update(jid, status=DONE, outputs=outputs, timings=timings, finished=now_iso(),
                             error=None, note=note)
        self.progress.job_finished(slot, jid, DONE, f"{len(outputs)} file(s) in {timings['total_s']:.1f} s")

    def _dropped(self, r: ResolvedJob, server: _Server, error: str, slot: int) -> None:
        jid = r.job.id
        drops = self._drops[jid] = self._drops.get(jid, 0) + 1
        if drops > self.opts.retries:
            self._fail(r, server, f"its server dropped it {drops} times (--retries {self.opts.retries}); "
                                  f"last: {error}", slot, attempts=drops)
            self._release()
            return
        with self._cond:
            self.summary.retries += 1
        self.manifest.update(jid, status=PENDING, error=f"retrying after: {error}")
        self.progress.message(f"{jid}: {error}; retry {drops}/{self.opts.retries}")
        self._release(r, requeue=True)

    def _fail(self, r: ResolvedJob, server: _Server, error: str, slot: int, attempts: int, **fields) -> None:
        self.summary.failures[r.job.id] = error
        self.manifest.update(r.job.id, status=FAILED, error=error, server=server.url, attempts=attempts,
                             finished=now_iso(), **fields)
        self.progress.job_finished(slot, r.job.id, FAILED, error)
