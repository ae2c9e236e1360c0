"""What the reproduction report's cache knows about each finished section: its manifest.

A finished section's cache entry (``OUT/cache/<section>-<hash>``, see
:func:`jaxnorm.papers.reproduce.cache_key`) holds a manifest, ``sources.json``: the section's
arguments, the SHA-256 of every repository file the section imported when it ran, the commit
and the time it finished. The hash in the entry's name decides an exact cache hit; the manifest
lets a report knowingly reuse a section run on earlier code (``reproduce --reuse NAME``) and say
which of its source files have changed since, so a reader can judge whether the change could
touch the section's numbers (a fix in a pruning module cannot move a normalization paper's
accuracy; a fix in the training engine can).

The cache is local (checkpoints and all); the report also keeps a small record of each section
it shows, ``OUT/records/<section>`` (manifest, ``results.json``, figures), committed with the
report, so a fresh checkout can reuse the committed runs too.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
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


def latest_entry(folders: list[str], section: str,
                 arguments: list[str]) -> tuple[str, dict] | None:
    """(entry, manifest) of the most recently finished run of ``section`` with the same
    ``arguments`` (same scale, seeds and data), whatever code it ran on, among the entries in
    ``folders`` (the cache's ``<section>-<hash>`` entries and the committed ``<section>``
    records); None if there is none.

    Entries without a manifest, or unfinished (``.partial``), are skipped: nothing would say
    what code they ran.
    """
    found = []
    for root in folders:
        if not os.path.isdir(root):
            continue
        for name in os.listdir(root):
            if name != section and not (name.startswith(section + '-')
                                        and not name.endswith('.partial')):
                continue
            entry = os.path.join(root, name)
            manifest = read_manifest(entry)
            if manifest and manifest['arguments'] == arguments:
                found.append((manifest['finished'], entry, manifest))
    if not found:
        return None
    _, entry, manifest = max(found)
    return entry, manifest


def save_record(entry: str, section: str, record: str) -> None:
    """Copies a finished cache entry's manifest, ``results.json`` and figures (not its
    checkpoints or log) to ``record``, replacing it atomically: the report's committed record
    of the run, which a fresh checkout can ``--reuse`` without the cache."""
    if os.path.abspath(entry) == os.path.abspath(record) or read_manifest(entry) is None:
        return
    partial = record + '.partial'
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(os.path.join(partial, section))
    shutil.copy2(os.path.join(entry, MANIFEST), os.path.join(partial, MANIFEST))
    source = os.path.join(entry, section)
    for name in os.listdir(source):
        if os.path.isfile(os.path.join(source, name)):
            shutil.copy2(os.path.join(source, name), os.path.join(partial, section, name))
    shutil.rmtree(record, ignore_errors=True)
    os.replace(partial, record)


def changed_sources(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """Files whose content differs between two digest maps, sorted: an edited file by its
    path, one the section imports only now as ``path (new)``, one it no longer imports as
    ``path (gone)``."""
    changed = [path for path in before.keys() & now.keys() if before[path] != now[path]]
    changed += [f'{path} (new)' for path in now.keys() - before.keys()]
    changed += [f'{path} (gone)' for path in before.keys() - now.keys()]
    return sorted(changed)
