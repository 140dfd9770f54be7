"""`libragen batch`: render a JSONL file of jobs through one or more ComfyUI servers."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

from ..errors import InputError
from .arguments import number_in, whole_number


def add_parser(sub):
    p = sub.add_parser(
        "batch", help="render many jobs headlessly through ComfyUI servers' HTTP API",
        description="Queue every job of JOBS (JSONL) on the given ComfyUI servers using WORKFLOW (an API-format "
                    "export), download each job's output files to OUT/<job id>/ and record everything in "
                    "OUT/manifest.json. Rerunning the same command skips finished jobs. See docs/batch.md.")
    p.add_argument("workflow", help="workflow JSON saved with ComfyUI's Export (API)")
    p.add_argument("jobs", help="JSONL file, one job per line (relative image paths are relative to this file)")
    p.add_argument("--server", action="append", required=True, metavar="URL",
                   help="ComfyUI address, e.g. http://127.0.0.1:8188; repeat for several servers")
    p.add_argument("--out", required=True, help="output folder (created if its parent exists)")
    p.add_argument("--retries", type=whole_number(0), default=3,
                   help="re-runs of a job after its server dropped (default 3); failed executions are not retried")
    p.add_argument("--timeout", type=number_in(0.0), default=None, metavar="S",
                   help="per-job limit in seconds from queueing to the end; the job is cancelled and marked failed")
    p.add_argument("--prompt-node", action="append", metavar="ID[.INPUT]",
                   help="where a job's \"prompt\" goes (default: auto-detect); repeat to set several inputs")
    p.add_argument("--seed-node", action="append", metavar="ID[.INPUT]",
                   help="where a job's \"seed\" goes (default: auto-detect); repeat to set several inputs")
    p.add_argument("--per-server", type=whole_number(1), default=1, metavar="N",
                   help="jobs in flight per server (default 1; 2 overlaps uploads/downloads with rendering)")
    p.add_argument("--server-wait", type=number_in(0.0), default=120.0, metavar="S",
                   help="stop when no server has answered for S seconds (default 120); rerun to resume")
    p.add_argument("--include-temp", action="store_true", help="also download temp (preview) files")
    p.add_argument("--check", action="store_true", help="only validate the workflow and jobs; contact no server")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of progress bars")
    p.set_defaults(run=run)


class _Bars:
    """tqdm bars: one over jobs, one per server slot for the running job's steps. Without a
    terminal (or with --no-progress) it prints one line per event instead."""

    def __init__(self, enabled: bool):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.enabled = enabled and sys.stderr.isatty()
        self.main = None
        self.slots: list = []
        self.where: dict[int, str] = {}
        self.lock = threading.Lock()
        self.finished = 0
        self.total = 0

    def start(self, to_run, skipped, slots):
        self.total = to_run
        if skipped:
            self.message(f"skipping {skipped} finished job(s) recorded in the manifest")
        if not self.enabled:
            return
        self.main = self._tqdm(total=to_run, desc="jobs", unit="job", position=0, dynamic_ncols=True)
        self.slots = [self._tqdm(total=0, desc=f"{u} idle", position=i + 1, leave=False, dynamic_ncols=True,
                                 bar_format="{desc} {bar} {n_fmt}/{total_fmt}") for i, u in enumerate(slots)]

    def job_started(self, slot, job_id, server):
        if self.enabled:
            with self.lock:
                bar = self.slots[slot]
                bar.reset(total=0)
                self.where[slot] = server.split("://", 1)[-1]
                bar.set_description_str(f"{self.where[slot]} {job_id}")

    def job_step(self, slot, job_id, node, value, total):
        if self.enabled:
            with self.lock:
                bar = self.slots[slot]
                if total and bar.total != total:
                    bar.reset(total=total)
                bar.set_description_str(f"{self.where.get(slot, '')} {job_id} node {node}", refresh=False)
                bar.n = value
                bar.refresh()

    def job_finished(self, slot, job_id, status, detail):
        with self.lock:
            self.finished += 1
            if self.main is not None:
                self.main.update(1)
                if status != "done":
                    self._tqdm.write(f"{job_id}: {status}: {detail}", file=sys.stderr)
            else:
                print(f"[{self.finished}/{self.total}] {job_id}: {status}: {detail}", file=sys.stderr, flush=True)

    def message(self, text):
        with self.lock:
            if self.main is not None:
                self._tqdm.write(text, file=sys.stderr)
            else:
                print(text, file=sys.stderr, flush=True)

    def close(self):
        for bar in [*self.slots, self.main]:
            if bar is not None:
                bar.close()


def run(args) -> int:
    from ..batch import BatchOptions, BatchRunner, load_workflow, parse_jobs
    from ..batch.client import normalize_server_url

    servers = [normalize_server_url(s) for s in args.server]
    workflow = load_workflow(args.workflow)
    jobs = parse_jobs(args.jobs, workflow, prompt_node=args.prompt_node, seed_node=args.seed_node)
    if args.check:
        print(f"{len(jobs)} job(s) fit {args.workflow}; nothing was queued")
        return 0
    out = Path(args.out)
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: its parent folder {out.parent} does not exist; create it first")
    opts = BatchOptions(retries=args.retries, timeout=args.timeout, per_server=args.per_server,
                        server_wait=args.server_wait, include_temp=args.include_temp)
    info = {"workflow": str(Path(args.workflow).resolve()), "jobs_file": str(Path(args.jobs).resolve())}
    bars = _Bars(enabled=not args.no_progress)
    summary = BatchRunner(workflow, jobs, servers, out, opts, bars, info).run()
    print(f"{summary.total} job(s): {summary.done} rendered, {summary.skipped} already finished, "
          f"{summary.failed} failed, {summary.pending} unfinished; {summary.retries} retr"
          f"{'y' if summary.retries == 1 else 'ies'} after server drops; {summary.elapsed_s:.1f} s; "
          f"manifest {out / 'manifest.json'}")
    for jid, err in list(summary.failures.items())[:20]:
        print(f"  failed {jid}: {err}", file=sys.stderr)
    return 0 if summary.failed == 0 and summary.pending == 0 else 1
