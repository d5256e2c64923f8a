"""Build the network test programs (tests/netprogs/*.c) and a test image that carries them.

    from netprogs import build, build_image      # tests/ is on sys.path in the test session
    paths = build()                    # {"mcast": "/tmp/swarmpy-netprogs/<hash>/mcast", "tcpblast": ...}
    image = build_image(client)        # "swarmpy-test/netprogs:latest", imported into client's engine

The programs are tiny static C binaries (`gcc -static -O2 -pthread`), compiled at test time and
cached under <tmp>/swarmpy-netprogs/<hash>/, where <hash> covers the sources, the flags and the
compiler's version, so a repeated test session does not compile again.  The image is the busybox
test image (swarmpy.localengine: the host's static busybox plus applet links, imported from a tar
made in memory, never pulled) with more applets (ping, nslookup, httpd, wget, ip, ...) and the
programs at /bin/mcast and /bin/tcpblast.  It carries the label `swarmpy.netprogs.hash` and the
extra tag `<repository>:netprogs-<hash12>`; `build_image` does nothing when the image under `name`
already has the current hash.

Command lines (see the head comment of each .c file):

    mcast send [-s SIZE] [-I IFADDR] GROUP PORT COUNT [RATE_PER_S] [TTL]
        -> "sent=N errors=E seconds=S"
    mcast recv [-i IDLE_S] GROUP PORT SECONDS [IFADDR]
        -> stderr "mcast: joined GROUP:PORT on IFADDR" once joined, then on stdout
           "received=N unique=U duplicates=D first=S last=L"
    tcpblast sink PORT                                  (prints nothing, runs until killed)
    tcpblast send HOST PORT SECONDS [STREAMS]
        -> "bytes=N seconds=S gbit_per_s=G"

By hand: `python tests/netprogs/build.py [OUTDIR]` compiles (and copies to OUTDIR);
`python tests/netprogs/build.py --image` also builds the image in the local engine.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):       # run as a script: make `swarmpy` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from swarmpy.localengine import APPLETS, busybox_tar, find_busybox  # noqa: E402

SRC_DIR = Path(__file__).resolve().parent
PROGRAMS = ("mcast", "tcpblast")
CFLAGS = ("-static", "-O2", "-pthread")
CACHE_DIR = Path(tempfile.gettempdir()) / "swarmpy-netprogs"
IMAGE = "swarmpy-test/netprogs:latest"
HASH_LABEL = "swarmpy.netprogs.hash"
# On top of the busybox test image's applets: these must exist (build_image fails otherwise) ...
REQUIRED_APPLETS = ("ping", "nslookup", "httpd", "wget", "ip")
# ... and these are linked where the busybox at hand has them.
EXTRA_APPLETS = ("ping6", "ifconfig", "route", "netstat", "arping", "traceroute", "timeout", "grep",
                 "sed", "awk", "head", "tail", "cut", "sort", "uniq", "tr", "tee", "mkdir", "rm", "cp",
                 "mv", "ln", "test", "[", "id", "xargs", "nproc", "uname", "usleep", "time")

GCC_MISSING = ("gcc is needed to build the network test programs (tests/netprogs) but was not "
               "found; install it with `apt-get install gcc libc6-dev`")


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError(GCC_MISSING)
    return gcc


def sources_hash(gcc: str | None = None) -> str:
    """sha256 over the C sources, the flags and the compiler's identity."""
    gcc = gcc or _gcc()
    h = hashlib.sha256()
    try:
        version = subprocess.run([gcc, "--version"], capture_output=True, text=True, timeout=30).stdout
        machine = subprocess.run([gcc, "-dumpmachine"], capture_output=True, text=True, timeout=30).stdout
    except OSError as exc:
        raise RuntimeError(f"{GCC_MISSING} ({exc})") from exc
    first_line = version.splitlines()[0] if version else gcc
    h.update(f"{first_line}|{machine.strip()}|{' '.join(CFLAGS)}\n".encode())
    for prog in PROGRAMS:
        h.update(f"{prog}\n".encode())
        h.update((SRC_DIR / f"{prog}.c").read_bytes())
    return h.hexdigest()


def build(outdir: str | os.PathLike | None = None) -> dict[str, str]:
    """Compile every program (once per source hash: cached in CACHE_DIR/<hash>/) and return
    {program: path}; with `outdir` the binaries are copied there and those paths returned."""
    gcc = _gcc()
    digest = sources_hash(gcc)
    cache = CACHE_DIR / digest
    cache.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for prog in PROGRAMS:
        target = cache / prog
        if not target.exists():
            # compile to a private name, then rename: concurrent sessions never see half a file
            fd, tmp = tempfile.mkstemp(prefix=f".{prog}.", dir=cache)
            os.close(fd)
            try:
                proc = subprocess.run([gcc, *CFLAGS, "-o", tmp, str(SRC_DIR / f"{prog}.c")],
                                      capture_output=True, text=True, timeout=300)
                if proc.returncode != 0:
                    hint = ""
                    if re.search(r"cannot find -lc|stdio\.h: No such file", proc.stderr):
                        hint = "\n(static glibc missing: `apt-get install gcc libc6-dev`)"
                    raise RuntimeError(f"compiling {prog}.c failed:\n{proc.stderr.strip()}{hint}")
                os.chmod(tmp, 0o755)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        paths[prog] = str(target)
    if outdir is not None:
        out = Path(outdir)
        out.mkdir(parents=True, exist_ok=True)
        for prog, path in list(paths.items()):
            shutil.copy2(path, out / prog)
            paths[prog] = str(out / prog)
    return paths


def _busybox_applets(busybox: str) -> set[str] | None:
    try:
        proc = subprocess.run([busybox, "--list"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return set(proc.stdout.split()) if proc.returncode == 0 else None


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def image_tar(busybox: str, programs: dict[str, str]) -> tuple[bytes, list[str]]:
    """The image's root filesystem as a tar: bin/busybox, applet links, the programs, tmp/."""
    available = _busybox_applets(busybox)
    if available is not None:
        missing = [a for a in REQUIRED_APPLETS if a not in available]
        if missing:
            raise RuntimeError(f"{busybox} lacks the applets {missing}; install busybox-static")
    applets = list(dict.fromkeys([*APPLETS, *REQUIRED_APPLETS]))
    applets += [a for a in EXTRA_APPLETS if a not in applets and available is not None and a in available]
    return busybox_tar(busybox, applets, programs), applets


def build_image(client, name: str = IMAGE, busybox: str = "/bin/busybox") -> str:
    """Import the netprogs test image into `client`'s engine (a docker SDK DockerClient, e.g.
    tests/netns.py Host.docker()) under `name` and `<repository>:netprogs-<hash12>`; a no-op
    when `name` already carries the current hash in its `swarmpy.netprogs.hash` label.
    Returns `name`."""
    import docker.errors

    if not os.path.exists(busybox):
        found = find_busybox()
        if found is None:
            raise RuntimeError(f"no busybox binary at {busybox}; install busybox-static")
        busybox = found
    programs = build()
    h = hashlib.sha256()
    h.update(sources_hash().encode())
    h.update(_file_digest(busybox).encode())
    h.update(" ".join([*APPLETS, *REQUIRED_APPLETS, *EXTRA_APPLETS]).encode())
    digest = h.hexdigest()
    try:
        if (client.images.get(name).labels or {}).get(HASH_LABEL) == digest:
            return name
    except docker.errors.ImageNotFound:
        pass
    tar, _ = image_tar(busybox, programs)
    repository, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:          # a name without a tag ("registry:5000/repo" included)
        repository, tag = name, "latest"
    client.api.import_image_from_data(tar, repository=repository, tag=tag,
                                      changes=[f"LABEL {HASH_LABEL}={digest}"])
    client.api.tag(f"{repository}:{tag}", repository, f"netprogs-{digest[:12]}")
    return name


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--image"]
    paths = build(args[0] if args else None)
    for prog, path in paths.items():
        print(f"{prog} {path}")
    if "--image" in argv:
        import docker
        client = docker.from_env(timeout=120)
        print(build_image(client))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
