"""The hashed locks match their hand-edited inputs (`make lock` regenerates them), and every place
that installs dependencies installs from a lock with --require-hashes. Parses files only: no
network, no pip."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# input (edited by hand) -> the lock `make lock` makes from it
LOCKS = {
    "requirements.txt": "requirements.lock",
    "requirements-dev.txt": "requirements-dev.lock",
    "requirements-nodeps.txt": "requirements-nodeps.lock",
}
FIX = "run `make lock` and commit the locks"

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*(?P<version>[^\s;]+)\s*(?:;.*)?$")
_HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_input(name: str) -> dict[str, str]:
    """The `name==version` pins of a requirements file, following `-r` includes."""
    pins: dict[str, str] = {}
    for number, raw in enumerate((REPO / name).read_text().splitlines(), 1):
        line = re.sub(r"(^|\s)#.*", "", raw).strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            pins.update(read_input(line.split(None, 1)[1]))
            continue
        match = _PIN.match(line)
        assert match, f"{name}:{number}: {raw!r} is not a `name==version` pin (the inputs pin every direct dependency)"
        pins[canonical(match["name"])] = match["version"]
    return pins


@dataclass
class Entry:
    name: str
    version: str
    line: str
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def read_lock(name: str) -> dict[str, Entry]:
    """A uv/pip-compile lock: `name==version [; marker] \\` lines, `--hash=` continuations and
    `# via` annotations."""
    entries: dict[str, Entry] = {}
    current: Entry | None = None
    in_via = False
    lines = (REPO / name).read_text().splitlines()
    index = 0
    while index < len(lines):
        raw = lines[index]
        index += 1
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comment = stripped.lstrip("#").strip()
            if current is not None and raw.startswith(" "):
                if comment.startswith("via"):
                    in_via = True
                    rest = comment[3:].strip()
                    if rest:
                        current.via.append(rest)
                elif in_via and comment:
                    current.via.append(comment)
            continue
        # One requirement, joined over its backslash continuations.
        logical = raw
        while logical.rstrip().endswith("\\") and index < len(lines):
            logical = logical.rstrip()[:-1] + " " + lines[index]
            index += 1
        parts = logical.split()
        hashes = [part for part in parts if part.startswith("--hash=")]
        spec = logical.split("--hash=")[0].strip()
        match = _PIN.match(spec)
        assert match, f"{name}: {spec!r} is not an exact `name==version` pin"
        current = Entry(canonical(match["name"]), match["version"], spec, hashes)
        in_via = False
        assert current.name not in entries, f"{name}: {current.name} appears twice"
        entries[current.name] = current
    assert entries, f"{name} has no entries"
    return entries


@pytest.mark.parametrize("input_name", list(LOCKS))
def test_every_input_pin_is_in_its_lock_at_the_same_version(input_name: str) -> None:
    lock_name = LOCKS[input_name]
    lock = read_lock(lock_name)
    problems = []
    for name, version in read_input(input_name).items():
        if name not in lock:
            problems.append(f"{name}=={version} is missing")
        elif lock[name].version != version:
            problems.append(f"{name}=={version} is locked at {lock[name].version}")
    assert not problems, f"{lock_name} is out of sync with {input_name} ({FIX}): " + "; ".join(problems)


@pytest.mark.parametrize("lock_name", list(LOCKS.values()))
def test_every_lock_entry_is_exact_and_hashed(lock_name: str) -> None:
    for entry in read_lock(lock_name).values():
        assert entry.hashes, f"{lock_name}: {entry.line} has no --hash ({FIX})"
        bad = [h for h in entry.hashes if not _HASH.match(h)]
        assert not bad, f"{lock_name}: {entry.line}: not sha256 hashes: {bad}"


@pytest.mark.parametrize("input_name", list(LOCKS))
def test_no_lock_entry_outlives_the_reason_it_is_there(input_name: str) -> None:
    """Each entry is there for an input (`via -r FILE`, which must still pin it) or for another
    entry of the same lock: catches a dependency removed from an input but left in the lock."""
    lock_name = LOCKS[input_name]
    lock = read_lock(lock_name)
    for entry in lock.values():
        reasons = [via for via in entry.via if not via.startswith("-c ")]
        assert reasons, f"{lock_name}: {entry.name} is there for no input nor package ({FIX})"
        for via in reasons:
            if via.startswith("-r "):
                source = via.split(None, 1)[1]
                assert entry.name in read_input(source), (
                    f"{lock_name}: {entry.name} is locked for {source}, which no longer pins it ({FIX})"
                )
            else:
                assert canonical(via) in lock, (
                    f"{lock_name}: {entry.name} is locked for {via}, which the lock no longer has ({FIX})"
                )


def test_the_runtime_lock_is_part_of_the_dev_lock() -> None:
    """The tests run the very versions (and files) the image installs."""
    runtime, dev = read_lock("requirements.lock"), read_lock("requirements-dev.lock")
    for name, entry in runtime.items():
        assert name in dev, f"requirements-dev.lock lacks {entry.line} ({FIX})"
        assert (dev[name].version, sorted(dev[name].hashes)) == (entry.version, sorted(entry.hashes)), (
            f"requirements-dev.lock has {dev[name].line}, requirements.lock {entry.line} ({FIX})"
        )


def test_the_nodeps_lock_holds_its_inputs_and_nothing_else() -> None:
    """Installed with --no-deps: any extra entry would be a dependency someone did not choose."""
    assert set(read_lock("requirements-nodeps.lock")) == set(read_input("requirements-nodeps.txt")), FIX


def _pip_installs(path: str) -> list[str]:
    """Every `pip install` command in a Makefile, Dockerfile or shell script, continuations joined."""
    text = re.sub(r"\\\n", " ", (REPO / path).read_text())
    return [m.group(0) for m in re.finditer(r"pip install[^\n&;]*", text)]


@pytest.mark.parametrize(
    ("path", "needed"),
    [
        ("Makefile", {"requirements-nodeps.lock", "requirements-dev.lock"}),
        ("Dockerfile", {"requirements-nodeps.lock", "requirements.lock"}),
    ],
)
def test_installs_come_from_the_locks_with_require_hashes(path: str, needed: set[str]) -> None:
    installs = _pip_installs(path)
    used = set()
    for command in installs:
        for requirement_file in re.findall(r"-r\s+(\S+)", command):
            name = Path(requirement_file.strip("\"'")).name
            assert name.endswith(".lock"), f"{path}: `{command}` installs from {name}, not a lock"
            assert "--require-hashes" in command, f"{path}: `{command}` lacks --require-hashes"
            if "nodeps" in name:
                assert "--no-deps" in command, f"{path}: `{command}` lacks --no-deps"
            used.add(name)
    assert needed <= used, f"{path} does not install {sorted(needed - used)}"


def test_a_lock_change_reinstalls_the_venv() -> None:
    makefile = (REPO / "Makefile").read_text()
    locks = re.search(r"^LOCKS\s*:?=(.*)$", makefile, re.M)
    assert locks and set(locks.group(1).split()) == set(LOCKS.values())
    rule = re.search(r"^\$\(VENV\)/\.installed:(.*)$", makefile, re.M)
    assert rule and "$(LOCKS)" in rule.group(1)
