"""Which tests run: meta.skip, meta.slow and the tag filters (spec/meta-tags.md).

`skip_reason(meta, settings)` returns None to run the test, else the exact
reason string reported for it.  Evaluation order, first hit wins: meta.skip,
meta.slow, --no-tag, --tag, --no-tag-meta, --tag-meta.
"""

from __future__ import annotations

import json
from typing import Any

from .settings import RunSettings


def _truthy_flag(v: Any) -> bool:
    """`true` or a non-zero integer (strings and floats do not count)."""
    if isinstance(v, bool):
        return v
    return isinstance(v, int) and v != 0


def tags_of(meta: dict[str, Any]) -> list[str]:
    tags = meta.get("tags")
    if isinstance(tags, str):
        return [tags]
    if isinstance(tags, list):
        return [t for t in tags if isinstance(t, str)]
    return []


def _debug_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(s, ensure_ascii=False) for s in items) + "]"


def meta_contains(meta: dict[str, Any], key: str, value: str) -> bool:
    """`meta[key]` is the string `value`, or an array holding it."""
    v = meta.get(key)
    if isinstance(v, str):
        return v == value
    if isinstance(v, list):
        return any(isinstance(x, str) and x == value for x in v)
    return False


def skip_reason(meta: dict[str, Any], settings: RunSettings) -> str | None:
    skip = meta.get("skip")
    if isinstance(skip, (str, bytes)):
        return f"skipped: {skip.decode('utf-8', 'replace') if isinstance(skip, bytes) else skip}"
    if _truthy_flag(skip):
        return "skipped (meta.skip)"
    if _truthy_flag(meta.get("slow")) and not settings.include_slow:
        return "filtered: slow tests skipped (pass --include-slow)"
    tags = tags_of(meta)
    if settings.no_tags and any(t in settings.no_tags for t in tags):
        return f"filtered: matched --no-tag ({_debug_list(settings.no_tags)})"
    if settings.tags and not any(t in settings.tags for t in tags):
        return f"filtered: did not match --tag ({_debug_list(settings.tags)})"
    for key in sorted(settings.no_tag_meta):
        for value in settings.no_tag_meta[key]:
            if meta_contains(meta, key, value):
                return f"filtered: matched --no-tag-meta ({key}={value})"
    for key in sorted(settings.tag_meta):
        values = settings.tag_meta[key]
        if values and not any(meta_contains(meta, key, v) for v in values):
            return f"filtered: did not match any --tag-meta {key}=…"
    return None
