"""What the reproduction report's cache knows about each finished section: its manifest.

A finished section's cache entry (``OUT/cache/<section>-<hash>``, see
:func:`jaxnorm.papers.reproduce.cache_key`) holds a manifest, ``sources.json``: the section's
arguments, the SHA-256 of every repository file the section imported when it ran, the commit
and the time it finished. The hash in the entry's name decides an exact cache hit; the manifest
lets a report knowingly reuse a section run on earlier code (``reproduce --reuse NAME``) and say
which of its source files have changed since, so a reader can judge whether the change could
touch the section's numbers (a fix in a pruning module cannot move a normalization paper's
accuracy; a fix in the training engine can).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess

MANIFEST = 'sources.json'


def source_digests(paths: list[str], repo: str) -> dict[str, str]:
    """``{path relative to repo: SHA-256 of its bytes}`` for each of ``paths``."""
    digests = {}
    for path in paths:
        with open(path, 'rb') as f:
            digests[os.path.relpath(path, repo)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def commit(repo: str) -> str | None:
    """The checkout's ``HEAD`` commit (``+dirty`` when tracked files differ from it), or None
    outside a git checkout."""
    try:
        head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=repo, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=repo, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ('+dirty' if dirty.strip() else '')


def write_manifest(folder: str, arguments: list[str], digests: dict[str, str],
                   revision: str | None, finished: str | None = None) -> None:
    """Writes ``folder/sources.json`` (``finished``: ISO time, default now, UTC)."""
    finished = finished or datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds')
    with open(os.path.join(folder, MANIFEST), 'w') as f:
        json.dump({'arguments': arguments, 'sources': digests, 'commit': revision,
                   'finished': finished}, f, indent=1, sort_keys=True)


def read_manifest(folder: str) -> dict | None:
    """The manifest of a finished cache entry, or None when it has none (older entries)."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def latest_entry(cache_dir: str, section: str, arguments: list[str]) -> tuple[str, dict] | None:
    """(folder, manifest) of the most recently finished entry of ``section`` run with the same
    ``arguments`` (same scale, seeds and data), whatever code it ran on; None if there is none.

    Entries without a manifest, or unfinished (``.partial``), are skipped: nothing would say
    what code they ran.
    """
    if not os.path.isdir(cache_dir):
        return None
    found = []
    for name in os.listdir(cache_dir):
        if not name.startswith(section + '-') or name.endswith('.partial'):
            continue
        folder = os.path.join(cache_dir, name)
        manifest = read_manifest(folder)
        if manifest and manifest['arguments'] == arguments:
            found.append((manifest['finished'], folder, manifest))
    if not found:
        return None
    _, folder, manifest = max(found)
    return folder, manifest


def changed_sources(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """Files whose content differs between two digest maps, sorted: an edited file by its
    path, one the section imports only now as ``path (new)``, one it no longer imports as
    ``path (gone)``."""
    changed = [path for path in before.keys() & now.keys() if before[path] != now[path]]
    changed += [f'{path} (new)' for path in now.keys() - before.keys()]
    changed += [f'{path} (gone)' for path in before.keys() - now.keys()]
    return sorted(changed)
