"""The review page's decisions file: {format, version, run_id, decisions: {clip id: accept|reject}}."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError

FORMAT = "libragen-curation-decisions"
VERSION = 1
VALUES = ("accept", "reject")


def read_decisions(path, *, run_id: str | None = None, known_ids: set[str] | None = None) -> dict[str, str]:
    """{clip id: "accept" | "reject"} from a decisions.json, checked against the curation run."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"decisions file not found: {path}. Save it from the review page (Save decisions)")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not a JSON decisions file ({e}); save it again from the review page") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path} is not a LibraGen review decisions file (format must be {FORMAT!r})")
    if data.get("version") != VERSION:
        raise InputError(f"{path} has decisions format version {data.get('version')!r}; this LibraGen reads version {VERSION}")
    if run_id is not None and data.get("run_id") != run_id:
        raise InputError(f"{path} was saved for curation run {data.get('run_id')!r}, not {run_id!r}; "
                         "open the review page of this output folder and save again")
    decisions = data.get("decisions")
    if not isinstance(decisions, dict):
        raise InputError(f"{path} has no 'decisions' object")
    bad = {k: v for k, v in decisions.items() if v not in VALUES}
    if bad:
        first = next(iter(bad.items()))
        raise InputError(f"{path}: decisions must be 'accept' or 'reject'; {first[0]!r} has {first[1]!r}")
    if known_ids is not None:
        unknown = sorted(set(decisions) - known_ids)
        if unknown:
            raise InputError(f"{path} names {len(unknown)} clips this run did not send to review "
                             f"(e.g. {unknown[:3]}); was it saved from another output folder?")
    return {str(k): str(v) for k, v in decisions.items()}


def decisions_document(run_id: str, decisions: dict[str, str]) -> dict:
    """The JSON document the review page saves (for scripts that decide without the page)."""
    return {"format": FORMAT, "version": VERSION, "run_id": run_id, "decisions": dict(decisions)}
