"""Batch job specs: read an API-format workflow and a JSONL file of jobs, check every job against
the workflow before anything is queued, and build each job's graph.

A job line is a JSON object with these keys (all optional but at least one change is expected):
  id       a name for the job (its output folder); derived from the line's content when absent
  images   {"<node id>.<input>": "path/to/file.png"}: uploaded, then the input gets the server's name
  prompt   a string for the workflow's prompt input (see `find_prompt_target`)
  seed     an integer for the workflow's seed input (see `find_seed_target`)
  inputs   {"<node id>.<input>": value}: any other input of any node
Keys starting with "_" are comments and ignored.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

JOB_KEYS = {"id", "images", "prompt", "seed", "inputs"}
PROMPT_INPUTS = ("prompt", "text")
SEED_INPUTS = ("seed", "noise_seed")
MANIFEST_NAME = "manifest.json"
# Job ids name output folders: a conservative character set keeps them valid on every filesystem.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Stand-in for an uploaded file inside a resolved graph until the server has named it.
_FILE_TAG = "@libragen-file:"


class JobSpecError(InputError):
    """One or more job lines do not fit the workflow; the message lists every problem found."""


@dataclass(frozen=True)
class Target:
    """One input of one node of the workflow."""

    node: str
    input: str

    def __str__(self) -> str:
        return f"{self.node}.{self.input}"


@dataclass
class Job:
    id: str
    line: int
    images: dict[Target, Path] = field(default_factory=dict)
    values: dict[Target, Any] = field(default_factory=dict)


@dataclass
class ResolvedJob:
    """A job's complete graph with files still as content-hash tags, and its fingerprint."""

    job: Job
    graph: dict
    files: dict[str, Path]  # sha256 -> local file
    fingerprint: str


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def load_workflow(path: str | Path) -> dict:
    """Read an API-format workflow ({node id: {"class_type", "inputs"}}), refusing the UI format."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"workflow {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"workflow {path} is not readable JSON ({e}); export it with ComfyUI's 'Export (API)'") from None
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise InputError(f"workflow {path} is in ComfyUI's UI format; batch needs the API format: "
                         "in ComfyUI use Workflow > Export (API) and pass that file")
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data.get("prompt", {}):
        data = data["prompt"]  # the body of a /prompt request is accepted as well
    if not isinstance(data, dict) or not data:
        raise InputError(f"workflow {path} holds no nodes; export it with ComfyUI's 'Export (API)'")
    for nid, node in data.items():
        if not (isinstance(node, dict) and isinstance(node.get("class_type"), str) and isinstance(node.get("inputs"), dict)):
            raise InputError(f"workflow {path}: node {nid!r} lacks class_type/inputs; is this an API-format export?")
    return data


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def parse_target(key: str, workflow: dict) -> Target:
    """'12.image' -> Target('12', 'image'); raises KeyError-free InputError with the nodes it knows."""
    if not isinstance(key, str) or "." not in key:
        raise ValueError(f"{key!r} is not '<node id>.<input name>'")
    # Node ids may themselves contain dots in exotic exports: take the split that names a real node.
    parts = key.split(".")
    for i in range(1, len(parts)):
        node, name = ".".join(parts[:i]), ".".join(parts[i:])
        if node in workflow:
            inputs = workflow[node]["inputs"]
            if name not in inputs:
                known = ", ".join(sorted(inputs)) or "none"
                raise ValueError(f"node {node} ({workflow[node]['class_type']}) has no input {name!r} "
                                 f"in this workflow (its inputs: {known})")
            return Target(node, name)
    node = parts[0]
    raise ValueError(f"node {node!r} is not in the workflow (its nodes: {_node_list(workflow)})")


def _node_list(workflow: dict) -> str:
    ids = sorted(workflow, key=lambda s: (len(s), s))
    text = ", ".join(f"{i} {workflow[i]['class_type']}" for i in ids[:30])
    return text + (", ..." if len(ids) > 30 else "")


def _candidates(workflow: dict, names: tuple[str, ...], kind: type) -> list[Target]:
    out = []
    for nid, node in workflow.items():
        for name, value in node["inputs"].items():
            if name in names and isinstance(value, kind) and not isinstance(value, bool):
                out.append(Target(nid, name))
    return out


def _feeds_positive(workflow: dict, node: str) -> bool:
    return any(_is_link(v) and v[0] == node and name == "positive"
               for other in workflow.values() for name, v in other["inputs"].items())


def _named_target(spec: str, workflow: dict, names: tuple[str, ...], option: str) -> Target:
    if spec in workflow:
        inputs = workflow[spec]["inputs"]
        found = [n for n in names if n in inputs]
        if len(found) != 1:
            raise InputError(f"{option} {spec}: node {spec} ({workflow[spec]['class_type']}) has no single input named "
                             f"{' or '.join(names)}; name one: {option} {spec}.<input> (its inputs: {', '.join(sorted(inputs))})")
        return Target(spec, found[0])
    try:
        return parse_target(spec, workflow)
    except ValueError as e:
        raise InputError(f"{option} {spec}: {e}") from None


def find_prompt_target(workflow: dict, spec: str | None = None) -> Target:
    """Where a job's "prompt" goes: `spec` ("ID" or "ID.input") if given, else the only string input
    named prompt/text, else the only such input on a node wired into a `positive` input."""
    if spec:
        return _named_target(spec, workflow, PROMPT_INPUTS, "--prompt-node")
    found = _candidates(workflow, PROMPT_INPUTS, str)
    if len(found) > 1:
        positive = [t for t in found if _feeds_positive(workflow, t.node)]
        found = positive if len(positive) == 1 else found
    if len(found) != 1:
        listed = ", ".join(f"{t} ({workflow[t.node]['class_type']})" for t in found) or "none"
        raise InputError(f"jobs use \"prompt\" but the workflow has no single string input named prompt/text "
                         f"(found: {listed}); choose with --prompt-node ID.INPUT (repeat it to set several)")
    return found[0]


def find_seed_target(workflow: dict, spec: str | None = None) -> Target:
    """Where a job's "seed" goes: `spec` if given, else the only integer input named seed/noise_seed."""
    if spec:
        return _named_target(spec, workflow, SEED_INPUTS, "--seed-node")
    found = _candidates(workflow, SEED_INPUTS, int)
    if len(found) != 1:
        listed = ", ".join(f"{t} ({workflow[t.node]['class_type']})" for t in found) or "none"
        raise InputError(f"jobs use \"seed\" but the workflow has no single integer input named seed/noise_seed "
                         f"(found: {listed}); choose with --seed-node ID.INPUT (repeat it to set several)")
    return found[0]


def _check_value(target: Target, value: Any, workflow: dict) -> str | None:
    """Why `value` cannot replace the workflow's current value of `target`, or None when it can."""
    current = workflow[target.node]["inputs"][target.input]
    if _is_link(current):
        if _is_link(value):
            return None if value[0] in workflow else f"links to node {value[0]!r}, which is not in the workflow"
        return (f"is wired to node {current[0]}'s output {current[1]}; a plain value would cut that link "
                f"(set an input of node {current[0]} instead)")
    if isinstance(current, bool):
        return None if isinstance(value, bool) else f"expects true/false, got {value!r}"
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expects a number, got {value!r}"
        if isinstance(value, float) and not value.is_integer():
            return f"expects an integer, got {value!r}"
        return None
    if isinstance(current, float):
        return None if isinstance(value, int | float) and not isinstance(value, bool) else f"expects a number, got {value!r}"
    if isinstance(current, str):
        return None if isinstance(value, str) else f"expects a string, got {value!r}"
    return None


def derive_job_id(spec: dict) -> str:
    """A stable id from the job line's content (key order and spacing do not matter)."""
    body = {k: v for k, v in spec.items() if k != "id" and not k.startswith("_")}
    return "job-" + hashlib.sha256(_canonical(body).encode()).hexdigest()[:12]


def parse_jobs(path: str | Path, workflow: dict, prompt_node: str | list[str] | None = None,
               seed_node: str | list[str] | None = None) -> list[Job]:
    """Read and check every line of a JSONL jobs file; raise JobSpecError listing all problems.

    Relative image paths are resolved against the jobs file's folder, so a jobs file and its
    reference images can be moved together. `prompt_node`/`seed_node` may list several targets
    (e.g. two samplers compared side by side): the job's value goes to each of them.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise InputError(f"jobs file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"jobs file {path} is not readable UTF-8 text ({e})") from None
    errors: list[str] = []
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    targets: dict[str, list[Target] | None] = {}

    def shortcut(kind: str) -> list[Target]:
        if kind not in targets:
            finder, specs = ((find_prompt_target, prompt_node) if kind == "prompt"
                             else (find_seed_target, seed_node))
            specs = [specs] if specs is None or isinstance(specs, str) else list(specs)
            try:
                found = [finder(workflow, spec) for spec in specs]
                targets[kind] = list(dict.fromkeys(found))
            except InputError as e:
                targets[kind] = None
                errors.append(str(e))
        if targets[kind] is None:
            raise _Reported
        return targets[kind]

    for number, text in enumerate(lines, 1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        where = f"{path.name} line {number}"
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            errors.append(f"{where}: not valid JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(spec, dict):
            errors.append(f"{where}: a job must be a JSON object, got {type(spec).__name__}")
            continue
        n_errors = len(errors)
        job = Job(id="", line=number)
        for key in spec:
            if key not in JOB_KEYS and not key.startswith("_"):
                errors.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(JOB_KEYS))}; "
                              "prefix comments with '_')")
        job_id = spec.get("id")
        if job_id is None:
            job_id = derive_job_id(spec)
        elif not isinstance(job_id, str) or not _ID_RE.fullmatch(job_id) or job_id == MANIFEST_NAME:
            errors.append(f"{where}: id {job_id!r} cannot name an output folder; use 1-100 characters "
                          "from A-Z a-z 0-9 . _ - starting with a letter or digit")
        job.id = job_id if isinstance(job_id, str) else ""

        for section in ("images", "inputs"):
            entries = spec.get(section, {})
            if not isinstance(entries, dict):
                errors.append(f"{where}: {section!r} must be an object of \"<node id>.<input>\": value")
                continue
            for key, value in entries.items():
                try:
                    target = parse_target(key, workflow)
                except ValueError as e:
                    errors.append(f"{where}: {section} key {key!r}: {e}")
                    continue
                if target in job.images or target in job.values:
                    errors.append(f"{where}: {section} key {key!r} sets an input already set by this job")
                    continue
                if section == "images":
                    if not isinstance(value, str) or not value:
                        errors.append(f"{where}: images key {key!r}: expected a file path, got {value!r}")
                        continue
                    problem = _check_value(target, "file name", workflow)
                    if problem:
                        errors.append(f"{where}: images key {key!r}: input {target} {problem}; "
                                      "images go to file-name inputs such as LoadImage's image")
                        continue
                    file = Path(value).expanduser()
                    file = file if file.is_absolute() else path.parent / file
                    if not file.is_file():
                        errors.append(f"{where}: images key {key!r}: {file} does not exist or is not a file")
                        continue
                    job.images[target] = file
                else:
                    problem = _check_value(target, value, workflow)
                    if problem:
                        errors.append(f"{where}: inputs key {key!r}: input {target} {problem}")
                        continue
                    job.values[target] = value

        for kind, kinds in (("prompt", str), ("seed", int)):
            if kind not in spec:
                continue
            value = spec[kind]
            if not isinstance(value, kinds) or isinstance(value, bool) or (kind == "seed" and value < 0):
                errors.append(f"{where}: {kind!r} must be {'a string' if kind == 'prompt' else 'a non-negative integer'}, "
                              f"got {value!r}")
                continue
            try:
                kind_targets = shortcut(kind)
            except _Reported:
                continue
            for target in kind_targets:
                if target in job.values or target in job.images:
                    errors.append(f"{where}: {kind!r} and an inputs key both set {target}; keep one")
                    continue
                job.values[target] = value

        if len(errors) == n_errors and job.id:
            if job.id in seen:
                errors.append(f"{where}: job id {job.id!r} is already used on line {seen[job.id]}; "
                              "give one of them a distinct \"id\" (identical lines render the same thing)")
            else:
                seen[job.id] = number
                jobs.append(job)
    if errors:
        shown = errors[:25] + ([f"... and {len(errors) - 25} more"] if len(errors) > 25 else [])
        raise JobSpecError(f"{path} has {len(errors)} problem(s); nothing was queued:\n  " + "\n  ".join(shown))
    if not jobs:
        raise JobSpecError(f"{path} holds no jobs; write one JSON object per line")
    return jobs


class _Reported(Exception):
    """A shortcut target is missing; the reason was already added to the error list once."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_job(workflow: dict, job: Job, hashes: dict[Path, str] | None = None) -> ResolvedJob:
    """The job's graph with its values applied and files tagged by content hash.

    The fingerprint covers the whole graph and the images' bytes, so a changed workflow, job line
    or reference image makes a finished job render again on resume.
    """
    hashes = {} if hashes is None else hashes
    graph = copy.deepcopy(workflow)
    for target, value in job.values.items():
        graph[target.node]["inputs"][target.input] = copy.deepcopy(value)
    files: dict[str, Path] = {}
    for target, file in job.images.items():
        if file not in hashes:
            try:
                hashes[file] = file_sha256(file)
            except OSError as e:
                raise InputError(f"job {job.id}: cannot read {file} ({e})") from None
        files[hashes[file]] = file
        graph[target.node]["inputs"][target.input] = _FILE_TAG + hashes[file]
    fingerprint = hashlib.sha256(_canonical(graph).encode()).hexdigest()
    return ResolvedJob(job, graph, files, fingerprint)


def bind_uploads(graph: dict, uploaded: dict[str, str]) -> dict:
    """Replace file tags by the names the server gave the uploads (sha256 -> server name)."""
    out = copy.deepcopy(graph)
    for node in out.values():
        for name, value in node["inputs"].items():
            if isinstance(value, str) and value.startswith(_FILE_TAG):
                node["inputs"][name] = uploaded[value[len(_FILE_TAG):]]
    return out
