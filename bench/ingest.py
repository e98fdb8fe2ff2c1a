"""Receiving throughput: our durable SCP against dcmtk storescp, Orthanc and bare pynetdicom.

Each receiver gets the same detector-size synthetic mammograms from dcmtk ``storescu``,
once from one sender and once from four concurrent senders (the files split between
them). Prints the machine (CPU, cores, load average), what writing and fsyncing one file
of the images' size costs on the disk the receivers write to, and a table of MB/s, the
ratio to storescp and each receiver's own CPU time per image (which, unlike seconds, a
busy machine hardly changes). Besides storescp and Orthanc, ``pynetdicom`` is a bare pynetdicom
listener (data sets streamed to files, no fsync, no database): the floor of the library
the node is built on, so that a reader can tell the machine from the node's own code.
``--baseline REV`` adds the node's listener as it was at git revision REV (its ``node/``
package, with this environment's libraries), for before/after figures from the same run.
``--without NAME`` leaves a receiver out (storescp, the reference, always runs).
``--busy N`` keeps N other processes spinning on the CPU throughout, as a machine that
also trains or infers would (the table then says how each receiver holds up). Runs are
interleaved (every receiver once, then again in reverse order) so that drift hits all
alike.

    .venv/bin/python bench/ingest.py [--images 20] [--repeat 2] [--data var/bench/ingest]
                                     [--baseline REV] [--without orthanc] [--busy N]

Our SCP fsyncs every file and its folder and records it in SQLite (WAL, synchronous=FULL)
before it answers; storescp (``+B``, bit-preserving) and Orthanc do not fsync each file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BREAST_NODE = Path(sys.executable).parent / "breast-node"
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def make_data(folder: Path, images: int) -> list[Path]:
    """Detector-size mammograms (3328 x 2560, 16 bit, uncompressed), generated once."""
    files = sorted(folder.rglob("*.dcm"))
    if len(files) < images:
        from training.synthetic import SynthOptions, write_studies

        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating {images} full-size mammograms in {folder} ...", file=sys.stderr)
        write_studies(folder, studies=(images + 3) // 4, seed=7, options=SynthOptions(size="full"))
        files = sorted(folder.rglob("*.dcm"))
    return files[:images]


@dataclass(frozen=True)
class Receiver:
    """A running receiver: the AE title to call and its process."""

    ae_title: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads) so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _listening(
    command: list[str],
    port: int,
    cwd: Path | None = None,
    quiet: bool = False,
    pythonpath: Path | None = None,
) -> Iterator[int]:
    """Run a receiver until the block ends; the block starts once ``port`` accepts."""
    out = subprocess.DEVNULL if quiet else None
    env = None
    if pythonpath is not None:  # first on the path: ahead of the installed project
        paths = [str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=out, env=env)
    try:
        wait_for_port(port)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@contextmanager
def our_scp(work: Path, port: int, source: Path | None = None) -> Iterator[Receiver]:
    """The node's listener; from the ``node/`` package under ``source`` when given."""
    config = work / "node.yaml"
    config.write_text(
        json.dumps(
            {
                "node": {"host": "127.0.0.1", "port": port, "max_pdu": 0},
                "http": {"host": "127.0.0.1", "port": free_port()},
                "storage": {"database": "sqlite:///node.db", "spool": "spool"},
                "completion": {"quiet_seconds": 3600},
                "model": None,
                "logging": {"level": "WARNING", "format": "json"},
            }
        ),
        encoding="utf-8",
    )
    if source is None:
        command = [str(BREAST_NODE), "serve", "--config", str(config)]
    else:
        command = [sys.executable, "-m", "node.cli", "serve", "--config", str(config)]
    with _listening(command, port, cwd=work, pythonpath=source) as pid:
        yield Receiver("BREAST_AI", pid)


@contextmanager
def checkout(revision: str) -> Iterator[Path]:
    """The ``node/`` package as it was at ``revision``, in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="ingest-baseline-") as folder:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "archive", revision, "node"], capture_output=True
        )
        if done.returncode != 0:
            raise SystemExit(f"--baseline {revision}: {done.stderr.decode(errors='replace')}")
        archive = done.stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        yield Path(folder)


@contextmanager
def storescp(work: Path, port: int) -> Iterator[Receiver]:
    out = work / "out"
    out.mkdir()
    command = ["storescp", "+B", "--max-pdu", "131072", "-aet", "STORESCP", "-od", str(out)]
    with _listening([*command, str(port)], port) as pid:
        yield Receiver("STORESCP", pid)


@contextmanager
def orthanc(work: Path, port: int) -> Iterator[Receiver]:
    config = work / "orthanc.json"
    config.write_text(
        json.dumps(
            {
                "Name": "bench",
                "StorageDirectory": str(work / "storage"),
                "IndexDirectory": str(work / "index"),
                "DicomAet": "ORTHANC",
                "DicomPort": port,
                "HttpPort": free_port(),
                "HttpServerEnabled": True,
                "RemoteAccessAllowed": False,
                "DicomCheckCalledAet": False,
                "DicomAlwaysAllowStore": True,
                "StorageCompression": False,
                "Plugins": [],
            }
        ),
        encoding="utf-8",
    )
    with _listening([ORTHANC, str(config)], port, quiet=True) as pid:
        yield Receiver("ORTHANC", pid)


@contextmanager
def bare_pynetdicom(work: Path, port: int) -> Iterator[Receiver]:
    """A bare pynetdicom listener: each data set streamed to a file, no fsync, no database."""
    out = work / "out"
    out.mkdir()
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--bare-listener",
        str(port),
        str(out),
    ]
    with _listening(command, port) as pid:
        yield Receiver("PYNETDICOM", pid)


def serve_bare(port: int, out: Path) -> None:
    """Run the bare pynetdicom listener (``--bare-listener PORT FOLDER``) until killed."""
    from pynetdicom import AE, AllStoragePresentationContexts, _config, evt

    _config.STORE_RECV_CHUNKED_DATASET = True  # streamed to a file, as the node receives
    tempfile.tempdir = str(out)  # the files pynetdicom writes, on the same file system
    count = 0

    def handle_store(event: evt.Event) -> int:
        nonlocal count
        count += 1
        os.replace(event.dataset_path, out / f"{count}.dcm")
        return 0x0000

    ae = AE(ae_title="PYNETDICOM")
    ae.maximum_pdu_size = 0
    ae.maximum_associations = 16
    ae.supported_contexts = AllStoragePresentationContexts
    ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, handle_store)])


RECEIVERS: dict[str, Callable[[Path, int], AbstractContextManager[Receiver]]] = {
    "storescp": storescp,
    "orthanc": orthanc,
    "pynetdicom": bare_pynetdicom,
    "breast-node": our_scp,
}


def send(port: int, ae_title: str, files: list[Path], senders: int) -> float:
    """Wall-clock seconds for ``senders`` concurrent storescu processes to send ``files``."""
    groups = [files[i::senders] for i in range(senders)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                "storescu",
                "-aec",
                ae_title,
                "--max-pdu",
                "131072",
                "127.0.0.1",
                str(port),
                *map(str, group),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for group in groups
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - start


def spinner() -> subprocess.Popen[bytes]:
    """A process that keeps one CPU busy until it is terminated."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


@contextmanager
def _running(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def fsync_cost(folder: Path, size: int, runs: int = 5) -> tuple[float, float]:
    """Median milliseconds to write ``size`` bytes to a new file in ``folder`` (128 KiB
    writes, as received) and then to fsync it: what making one image durable costs on
    this file system, beyond receiving it."""
    chunk = os.urandom(1 << 17)
    writes: list[float] = []
    syncs: list[float] = []
    for _ in range(runs):
        with tempfile.NamedTemporaryFile(dir=folder, prefix="fsync-") as tmp:
            start = time.perf_counter()
            for _ in range(0, size, len(chunk)):
                tmp.write(chunk)
            tmp.flush()
            written = time.perf_counter()
            os.fsync(tmp.fileno())
            writes.append(written - start)
            syncs.append(time.perf_counter() - written)
    return 1000 * statistics.median(writes), 1000 * statistics.median(syncs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2, help="runs per cell; the best is kept")
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "bench" / "ingest")
    parser.add_argument(
        "--baseline", metavar="REV", help="also run the node's listener as of git revision REV"
    )
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=[name for name in RECEIVERS if name != "storescp"],
        help="leave this receiver out (repeatable)",
    )
    parser.add_argument(
        "--busy", type=int, default=0, metavar="N", help="N processes spinning on the CPU meanwhile"
    )
    parser.add_argument(
        "--bare-listener", nargs=2, metavar=("PORT", "FOLDER"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.bare_listener:
        serve_bare(int(args.bare_listener[0]), Path(args.bare_listener[1]))
        return 0

    files = make_data(args.data, args.images)
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    work = ROOT / "var"
    image_size = max(f.stat().st_size for f in files)
    write_ms, fsync_ms = fsync_cost(work, image_size)
    load_before = load()
    with ExitStack() as stack:
        for _ in range(args.busy):
            stack.enter_context(_running(spinner()))
        receivers = {k: v for k, v in RECEIVERS.items() if k not in args.without}
        if args.baseline:
            source = stack.enter_context(checkout(args.baseline))
            receivers[f"breast-node @{args.baseline}"] = partial(our_scp, source=source)
        results: dict[tuple[str, int], float] = {}
        cpu: dict[tuple[str, int], list[float]] = {}
        for senders in (1, 4):
            for run in range(args.repeat):
                # every receiver once per round, in reverse order every other round
                order = list(receivers.items())
                for name, receiver in order if run % 2 == 0 else reversed(order):
                    with tempfile.TemporaryDirectory(prefix="ingest-", dir=work) as tmp:
                        port = free_port()
                        with receiver(Path(tmp), port) as running:
                            used = running.cpu_seconds()
                            seconds = send(port, running.ae_title, files, senders)
                            used = running.cpu_seconds() - used
                    key = (name, senders)
                    cpu.setdefault(key, []).append(used)
                    results[key] = min(results.get(key, float("inf")), seconds)

    print(f"{len(files)} files, {megabytes:.0f} MB, storescu -> receiver on loopback")
    busy = f", {args.busy} spinning processes meanwhile" if args.busy else ""
    print(f"machine: {machine()}; load average {load_before} before, {load()} after{busy}")
    print(
        f"disk ({work}): writing a {image_size / 1e6:.0f} MB file takes {write_ms:.1f} ms, "
        f"its fsync {fsync_ms:.1f} ms (median of 5)"
    )
    print(f"seconds: best of {args.repeat} runs per row; ", end="")
    print("CPU ms/image: the receiver's own CPU time (all its threads), median of the runs")
    print()
    print("| receiver | senders | seconds | MB/s | vs storescp | CPU ms/image |")
    print("|---|---:|---:|---:|---:|---:|")
    for senders in (1, 4):
        reference = results[("storescp", senders)]
        for name in receivers:
            seconds = results[(name, senders)]
            per_image = 1000 * statistics.median(cpu[(name, senders)]) / len(files)
            print(
                f"| {name} | {senders} | {seconds:.2f} | {megabytes / seconds:.0f} | "
                f"{reference / seconds:.2f}x | {per_image:.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
