"""Benchmark the relay end to end: the real ``comity-relay serve``, over loopback.

    python bench/relay.py [--quick] [--seconds 8] [--senders 1,50] [--loadgen auto|wrk|python]
                          [--push 300] [--blob-mib 256] [--piece-mib 16] [--uvloop]
                          [--no-access-log] [--py-spy FILE] [--dir PATH]

The relay runs as a subprocess, ``comity-relay serve --port 0 --data-dir TMP``,
with durable commits as shipped (WAL, synchronous=FULL, group commit) and its
access log on (written to a file). One setting differs from the defaults: the
per-member rate limit is raised, since one bench connection submits far more
than the 200 requests/s a member is allowed.

1. Messages. A network of 51 members. Envelopes are sealed with
   ``keys.envelope.seal`` before anything is timed, in one process per core:
   one recipient and a one-byte body, the smallest real envelope (about
   2.5 KiB: the ML-KEM-768 hybrid wrap of the content key alone is 1.6 KiB of
   base64). ``wrk`` (one thread, a Lua script over the pre-sealed bodies) or,
   without wrk, ``--workers`` Python processes with aiohttp keep 1 and then 50
   submissions in flight for ``--seconds``, after an untimed one-second
   warm-up that also sizes the pool of envelopes. A submission counts when it
   answered 201 (stored and committed). Each connection submits whichever
   envelope comes next, so the 50 senders share 50 members' tokens.
2. Push. A separate process holds the recipient's WebSocket; one sender
   submits ``--push`` envelopes one at a time. Latency: the event's arrival
   minus the moment the submit returned at the sender (both processes read
   the same CLOCK_MONOTONIC); also from the moment the submit was sent.
3. Blob. Upload ``--blob-mib`` of random bytes in ``--piece-mib`` PATCH
   pieces, streamed from a generator over a 4 MiB random pool (never the whole
   blob in memory), then download it and discard it. Peak RSS is the VmHWM of
   the largest relay process (with ``--relay-workers`` > 1: supervisor and
   workers), reset just before the upload (``/proc/PID/clear_refs``); PSS is
   summed over all of them after the download (shared pages counted once).

CPU split: CPU seconds of the relay (its event-loop thread, and its other
threads: the SQLite writer, readers, file I/O), of the load generator, and of
everything else on the machine, per second of the timed part (100% = one
core). Prints a table; writes JSON to bench/results/relay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import re
import resource
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keys.encoding import b64d, canonical  # noqa: E402
from keys.hpke import EncryptionKey, make_key_record  # noqa: E402
from keys.identity import IdentityKey, IdentityPublicKey  # noqa: E402
from keys.log import (LogVerifier, default_policy, entry_hash, make_entry,  # noqa: E402
                      make_genesis, member_record)
from relay.auth import auth_statement  # noqa: E402
from relay.relaykey import RELAY_KEY_FILE  # noqa: E402

NETWORK = "bench-net"
MEMBERS = 51                   # an admin (m00) plus 50 senders
KEY_LIFETIME = 90 * 86400      # encryption key records valid for 90 days
START_TIMEOUT = 30.0           # seconds to wait for "listening on"
STOP_TIMEOUT = 30.0            # seconds SIGTERM may take before SIGKILL
REQUEST_TIMEOUT = 60.0         # any one bench HTTP request
AUTH_ATTEMPTS = 20             # 429s waited out (anonymous limit: 20/s, burst 60)
WARMUP_SECONDS = 1             # per sender count, untimed; sizes the envelope pool
WARMUP_ENVELOPES = 3000
POOL_MARGIN = 2.0              # envelopes sealed per message the warm-up rate predicts
MIB = 1024 * 1024
RANDOM_POOL = 4 * MIB          # the blob generator cycles through this much random data
CLK_TCK = os.sysconf("SC_CLK_TCK")
BUSY_WARNING = 20              # % of a core used by other processes that earns a warning
# uvloop is no dependency of comity: set its policy, then run the usual entry point.
UVLOOP_BOOT = ("import asyncio, sys, uvloop; "
               "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
               "from relay.cli import main; sys.argv[0] = 'comity-relay'; main()")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


# -- the relay process --------------------------------------------------------------------------

class RelayProcess:
    """``comity-relay serve`` on a free loopback port, with its own data folder."""

    def __init__(self, data_dir: Path, *, uvloop: bool, access_log: bool, workers: int = 1):
        options = ["serve", "--port", "0", "--data-dir", str(data_dir), "--workers", str(workers)]
        command = ([sys.executable, "-c", UVLOOP_BOOT] if uvloop
                   else [shutil.which("comity-relay") or "comity-relay"])
        env = {**os.environ, "COMITY_RELAY_RATE_PER_SECOND": "1000000",
               "COMITY_RELAY_RATE_BURST": "1000000",
               "COMITY_RELAY_ACCESS_LOG": "1" if access_log else "0"}
        self.log_path = data_dir.parent / f"{data_dir.name}.stderr"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([*command, *options], stdout=subprocess.PIPE,
                                     stderr=self._log, cwd=data_dir.parent, env=env)
        self.pid = self.proc.pid
        self.url = self._wait_listening()

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.proc.stdout], [], [], left)[0]:
                break
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            if match := re.match(r"listening on (\S+)", line):
                return match.group(1)
        self.stop()
        raise SystemExit("error: the relay did not start:\n" + self.log_path.read_text()[-2000:])

    def _ticks(self, stat: Path) -> tuple[int, int]:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])                 # utime, stime

    def pids(self) -> list[int]:
        """The relay's processes: the one process, or the supervisor and its workers."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            children = []
        return [self.pid, *map(int, children)]

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: the event-loop threads, the other threads, their system share."""
        split = dict.fromkeys(("loop", "loop_sys", "others", "others_sys"), 0.0)
        for pid in self.pids():
            try:
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
            except OSError:                                     # the process just ended
                continue
            for task in tasks:
                try:
                    user, system = self._ticks(task / "stat")
                except OSError:                                 # the thread just ended
                    continue
                key = "loop" if task.name == str(pid) else "others"
                split[key] += (user + system) / CLK_TCK
                split[key + "_sys"] += system / CLK_TCK
        return split

    def memory(self) -> dict[str, float]:
        """MiB: VmRSS and VmHWM (peak RSS) of the largest relay process, and Pss summed over
        its processes (workers share pages with the supervisor they were forked from:
        summing their RSS would count those pages once per process)."""
        result = {"VmRSS": 0.0, "VmHWM": 0.0, "Pss": 0.0}
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            for key in ("VmRSS", "VmHWM"):
                value = int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1)) / 1024
                result[key] = max(result[key], value)
            result["Pss"] += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1)) / 1024
        return result

    def reset_peak_rss(self) -> bool:
        try:
            for pid in self.pids():
                Path(f"/proc/{pid}/clear_refs").write_text("5")    # 5: VmHWM := VmRSS
            return True
        except OSError:
            return False

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


# -- a network of members -------------------------------------------------------------------------

def handle(index: int) -> str:
    return f"m{index:02d}"


def build_log(seeds: list[tuple[bytes, bytes]], now: int, relay_key: IdentityPublicKey) -> list[dict]:
    """Genesis with m00 as admin (naming the relay's key), then one add-member entry per member."""
    entries: list[dict] = []
    admin = IdentityKey.from_seed(seeds[0][0])
    for index, (identity_seed, encryption_seed) in enumerate(seeds):
        identity = IdentityKey.from_seed(identity_seed)
        record = make_key_record(identity, EncryptionKey(encryption_seed).public, version=1,
                                 created=now, not_after=now + KEY_LIFETIME)
        member = member_record(identity.public, record, handle=handle(index),
                               name=f"Member {index}", role="admin" if index == 0 else "member")
        if index == 0:
            entries.append(make_genesis(admin, NETWORK, member, default_policy(), now,
                                        relay_key=relay_key))
        else:
            entries.append(make_entry(entries[-1], index, "add-member", {"member": member},
                                      now, [admin]))
    return entries


async def _post(session: aiohttp.ClientSession, url: str, body: dict,
                headers: dict | None = None) -> dict:
    """POST JSON; wait out the anonymous rate limit; stop on any other refusal."""
    for _ in range(AUTH_ATTEMPTS):
        async with session.post(url, json=body, headers=headers) as response:
            if response.status == 429:
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            data = await response.json()
            if response.status >= 300:
                raise SystemExit(f"error: {url} answered {response.status}: {data}")
            return data
    raise SystemExit(f"error: {url} kept answering 429")


async def setup_network(base: str, data_dir: Path, seeds, entries) -> list[str]:
    """Create the network, append every member, authenticate each; return their tokens."""
    token = subprocess.run(["comity-relay", "token", "--network", NETWORK, "--data-dir",
                            str(data_dir)], check=True, capture_output=True, text=True,
                           timeout=START_TIMEOUT).stdout.split()[0]
    net = f"{base}/v1/networks/{NETWORK}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as s:
        await _post(s, f"{base}/v1/networks", {"token": token, "genesis": entries[0]})
        async with s.get(f"{base}/v1/relay") as response:
            relay_key = b64d((await response.json())["relay_key"])

        async def login(index: int) -> str:
            challenge = await _post(s, f"{net}/auth/challenge", {"handle": handle(index)})
            statement = auth_statement(b64d(challenge["challenge"]), handle(index),
                                       entry_hash(entries[0]), relay_key)
            signature = IdentityKey.from_seed(seeds[index][0]).sign_b64("auth", statement)
            issued = await _post(s, f"{net}/auth/token", {
                "handle": handle(index), "challenge": challenge["challenge"],
                "signature": signature})
            return issued["token"]

        tokens = [await login(0)]
        for entry in entries[1:]:
            await _post(s, f"{net}/log", {"entry": entry}, {"Authorization": "Bearer " + tokens[0]})
        for index in range(1, len(seeds)):
            tokens.append(await login(index))
    return tokens


# -- sealing, in worker processes, before anything is timed --------------------------------------

_SEALER: dict = {}


def _seal_init(seeds, entries) -> None:
    verifier = LogVerifier(entry_hash(entries[0]))
    verifier.extend(entries)
    _SEALER.update(roster=verifier.roster, keys=[IdentityKey.from_seed(s[0]) for s in seeds])


def _seal_part(job: tuple[str, list[tuple[int, int]], list[str], int]) -> None:
    """Seal one envelope per (sender, recipient); write ``token body`` lines to a file."""
    from keys._envelope_shape import MESSAGE_TYPES
    from keys.envelope import seal
    path, pairs, tokens, created = job
    with open(path, "wb") as out:
        for sender, recipient in pairs:
            envelope, _ = seal(_SEALER["keys"][sender], handle(sender), _SEALER["roster"],
                               [handle(recipient)], {"type": MESSAGE_TYPES[0], "subject": "b"},
                               "x", created=created)
            out.write(tokens[sender].encode() + b" " + canonical({"envelope": envelope}) + b"\n")


def seal_requests(folder: Path, name: str, count: int, senders: list[int], recipient_of,
                  seeds, entries, tokens) -> Path:
    """A file of ``count`` pre-sealed submissions, one ``token body`` line each."""
    pairs = [(senders[i % len(senders)], recipient_of(senders[i % len(senders)]))
             for i in range(count)]
    processes = min(os.cpu_count() or 1, max(1, count // 500))
    per = -(-count // processes)
    parts = [folder / f"{name}.{n}" for n in range(processes)]
    jobs = [(str(parts[n]), pairs[n * per:(n + 1) * per], tokens, int(time.time()))
            for n in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes, _seal_init, (seeds, entries)) as pool:
        pool.map(_seal_part, jobs)
    target = folder / name
    with open(target, "wb") as out:
        for part in parts:
            out.write(part.read_bytes())
            part.unlink()
    return target


def read_requests(path: Path) -> list[tuple[str, bytes]]:
    return [(token.decode(), body) for token, body in
            (line.split(b" ", 1) for line in path.read_bytes().splitlines())]


# -- load generators ----------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- Cycles through pre-sealed submissions ("token body" lines; thread n takes every nth).
-- Counts 201 (stored), 200 (an idempotent repeat: the pool ran out) and anything else.
local threads, next_id = {}, 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local step, i = tonumber(args[2]), 0
  requests = {}
  for line in io.lines(args[1]) do
    if i % step == id then
      local space = line:find(" ", 1, true)
      requests[#requests + 1] = wrk.format("POST", nil, {
        ["Authorization"] = "Bearer " .. line:sub(1, space - 1),
        ["Content-Type"] = "application/json"}, line:sub(space + 1))
    end
    i = i + 1
  end
  sent, created, repeated, failed = 0, 0, 0, 0
end

function request()
  sent = sent + 1
  return requests[(sent - 1) % #requests + 1]
end

function response(status, headers, body)
  if status == 201 then created = created + 1
  elseif status == 200 then repeated = repeated + 1
  else failed = failed + 1 end
end

function done(summary, latency, requests)
  local c, r, f = 0, 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created"); r = r + t:get("repeated"); f = f + t:get("failed")
  end
  local e = summary.errors
  io.write(string.format('WRK-RESULT {"duration_us":%d,"created":%d,"repeated":%d,' ..
    '"failed":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n', summary.duration,
    c, r, f + e.connect + e.read + e.write + e.timeout, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def run_wrk(url: str, requests_file: Path, connections: int, seconds: int) -> dict:
    script = requests_file.with_suffix(".lua")
    script.write_text(WRK_SCRIPT)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "30s",
         "-s", str(script), url, "--", str(requests_file), "1"],
        capture_output=True, text=True, timeout=seconds + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"WRK-RESULT (\{.*\})", done.stdout)
    if done.returncode != 0 or not match:
        raise SystemExit(f"error: wrk failed:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(match.group(1))
    return {"seconds": raw["duration_us"] / 1e6, "created": raw["created"],
            "repeated": raw["repeated"], "failed": raw["failed"],
            **{f"{k}_ms": raw[f"{k}_us"] / 1000 for k in ("p50", "p90", "p99", "max")},
            "loadgen_cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}


def _python_worker(url: str, requests: list[tuple[str, bytes]], tasks: int, start_at: float,
                   seconds: float, results) -> None:
    """One load process: ``tasks`` aiohttp tasks, each submitting until the deadline."""
    async def main() -> dict:
        latencies: list[float] = []
        counts = {"created": 0, "repeated": 0, "failed": 0}
        position = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            cpu, deadline = time.process_time(), start_at + seconds

            async def task() -> None:
                nonlocal position
                while time.monotonic() < deadline:
                    token, body = requests[position % len(requests)]
                    position += 1
                    begun = time.monotonic()
                    async with session.post(url, data=body, headers={
                            "Authorization": "Bearer " + token,
                            "Content-Type": "application/json"}) as response:
                        await response.read()
                    latencies.append(time.monotonic() - begun)
                    counts[{201: "created", 200: "repeated"}.get(response.status, "failed")] += 1
            await asyncio.gather(*(task() for _ in range(tasks)))
            return {**counts, "latencies": latencies, "ended": time.monotonic(),
                    "cpu": time.process_time() - cpu}
    results.put(asyncio.run(main()))


def run_python_load(url: str, requests_file: Path, connections: int, seconds: int,
                    workers: int) -> dict:
    requests = read_requests(requests_file)
    workers = max(1, min(workers, connections))
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.monotonic() + 3.0          # every process has imported aiohttp by then
    share = [connections // workers + (n < connections % workers) for n in range(workers)]
    procs = [context.Process(target=_python_worker, args=(
        url, requests[n::workers], share[n], start_at, seconds, results)) for n in range(workers)]
    for proc in procs:
        proc.start()
    outs = [results.get(timeout=seconds + 120) for _ in procs]
    for proc in procs:
        proc.join(30)
    latencies = sorted(x * 1000 for out in outs for x in out["latencies"])
    return {"seconds": max(out["ended"] for out in outs) - start_at,
            **{k: sum(out[k] for out in outs) for k in ("created", "repeated", "failed")},
            **{f"p{q}_ms": percentile(latencies, q / 100) for q in (50, 90, 99)},
            "max_ms": latencies[-1], "loadgen_cpu_s": sum(out["cpu"] for out in outs)}


def machine_ticks() -> tuple[int, int]:
    """(busy, all) jiffies of every CPU so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)     # less idle and iowait


def measure_submits(relay: RelayProcess, url: str, requests_file: Path, connections: int,
                    seconds: int, loadgen: str, workers: int) -> dict:
    cpu0, (busy0, all0) = relay.cpu(), machine_ticks()
    if loadgen == "wrk":
        row = run_wrk(url, requests_file, connections, seconds)
    else:
        row = run_python_load(url, requests_file, connections, seconds, workers)
    cpu1, (busy1, all1) = relay.cpu(), machine_ticks()
    wall = row["seconds"]
    pct = {k: 100 * (cpu1[k] - cpu0[k]) / wall for k in cpu0}
    row.update(senders=connections, loadgen=loadgen, messages_per_s=row["created"] / wall,
               relay_cpu_pct=pct["loop"] + pct["others"],
               relay_loop_thread_cpu_pct=pct["loop"], relay_loop_thread_sys_pct=pct["loop_sys"],
               relay_other_threads_cpu_pct=pct["others"],
               relay_other_threads_sys_pct=pct["others_sys"],
               loadgen_cpu_pct=100 * row.pop("loadgen_cpu_s") / wall,
               machine_busy_pct=100 * (os.cpu_count() or 1) * (busy1 - busy0) / max(1, all1 - all0))
    # Anything else running meanwhile: other jobs on a shared machine skew every figure.
    row["other_cpu_pct"] = max(0.0, row["machine_busy_pct"] - row["relay_cpu_pct"]
                               - row["loadgen_cpu_pct"])
    return row


# -- push latency -------------------------------------------------------------------------------

def _push_listener(url: str, token: str, count: int, ready, results) -> None:
    """Hold the recipient's WebSocket; report when each 'message' event arrived."""
    async def main() -> dict[str, float]:
        arrived: dict[str, float] = {}
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, headers={"Authorization": "Bearer " + token}) as ws:
                hello = await ws.receive(timeout=REQUEST_TIMEOUT)
                if hello.type != aiohttp.WSMsgType.TEXT or \
                        json.loads(hello.data)["type"] != "hello":
                    return arrived
                ready.set()
                deadline = time.monotonic() + REQUEST_TIMEOUT + count
                while len(arrived) < count and (left := deadline - time.monotonic()) > 0:
                    try:
                        frame = await ws.receive(timeout=left)
                    except asyncio.TimeoutError:
                        break
                    now = time.monotonic()
                    if frame.type != aiohttp.WSMsgType.TEXT:
                        break
                    event = json.loads(frame.data)
                    if event.get("type") == "message":
                        arrived[event["id"]] = now
        return arrived
    results.put(asyncio.run(main()))


async def _submit_paced(url: str, requests: list[tuple[str, bytes]],
                        gap: float) -> dict[str, tuple[float, float]]:
    sent: dict[str, tuple[float, float]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as s:
        for token, body in requests:
            message_id = json.loads(body)["envelope"]["id"]
            begun = time.monotonic()
            async with s.post(url, data=body, headers={"Authorization": "Bearer " + token,
                                                       "Content-Type": "application/json"}) as r:
                await r.read()
            sent[message_id] = (begun, time.monotonic())
            if r.status != 201:
                raise SystemExit(f"error: a push-test submit answered {r.status}")
            await asyncio.sleep(gap)
    return sent


def measure_push(base: str, requests_file: Path, recipient_token: str, gap: float) -> dict:
    requests = read_requests(requests_file)
    context = multiprocessing.get_context("spawn")
    ready, results = context.Event(), context.Queue()
    listener = context.Process(target=_push_listener, args=(
        base.replace("http", "ws", 1) + f"/v1/networks/{NETWORK}/events", recipient_token,
        len(requests), ready, results))
    listener.start()
    if not ready.wait(START_TIMEOUT):
        listener.kill()
        raise SystemExit("error: the push listener did not connect")
    sent = asyncio.run(_submit_paced(f"{base}/v1/networks/{NETWORK}/messages", requests, gap))
    arrived = results.get(timeout=REQUEST_TIMEOUT + len(requests))
    listener.join(30)
    after_return = sorted((arrived[i] - sent[i][1]) * 1000 for i in sent if i in arrived)
    after_send = sorted((arrived[i] - sent[i][0]) * 1000 for i in sent if i in arrived)
    submit = sorted((s[1] - s[0]) * 1000 for s in sent.values())
    return {"messages": len(sent), "events": len(after_return),
            "p50_ms": percentile(after_return, 0.5), "p99_ms": percentile(after_return, 0.99),
            "arrived_before_return": sum(1 for x in after_return if x < 0),
            "from_send_p50_ms": percentile(after_send, 0.5),
            "from_send_p99_ms": percentile(after_send, 0.99),
            "submit_p50_ms": percentile(submit, 0.5), "submit_p99_ms": percentile(submit, 0.99)}


# -- blob upload and download -------------------------------------------------------------------

async def _random_piece(pool: bytes, start: int, size: int, chunk: int = 256 * 1024):
    """``size`` ciphertext-like bytes: slices of a random pool at shifting offsets."""
    view, sent, offset = memoryview(pool), 0, start % len(pool)
    while sent < size:
        length = min(chunk, size - sent, len(pool) - offset)
        yield view[offset:offset + length]
        sent += length
        offset = (offset + length + 4099) % len(pool)   # a prime step: no run of bytes repeats


async def _blob(base: str, token: str, size: int, piece: int) -> dict:
    auth = {"Authorization": "Bearer " + token}
    net = f"{base}/v1/networks/{NETWORK}"
    pool = os.urandom(RANDOM_POOL)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(f"{net}/blobs", json={"size": size}, headers=auth) as r:
            blob = (await r.json())["blob"]
        begun, offset = time.monotonic(), 0
        while offset < size:
            length = min(piece, size - offset)
            headers = {**auth, "Upload-Offset": str(offset), "Content-Length": str(length),
                       "Content-Type": "application/offset+octet-stream"}
            async with session.patch(f"{net}/blobs/{blob}", headers=headers,
                                     data=_random_piece(pool, offset, length)) as r:
                if r.status != 204:
                    raise SystemExit(f"error: an upload piece answered {r.status}: "
                                     f"{await r.text()}")
                offset = int(r.headers["Upload-Offset"])
        uploaded, received = time.monotonic(), 0
        async with session.get(f"{net}/blobs/{blob}", headers=auth) as r:
            if r.status != 200:
                raise SystemExit(f"error: the download answered {r.status}")
            async for chunk in r.content.iter_chunked(MIB):
                received += len(chunk)
        downloaded = time.monotonic()
    if received != size:
        raise SystemExit(f"error: downloaded {received} of {size} bytes")
    return {"upload_s": uploaded - begun, "download_s": downloaded - uploaded}


def measure_blob(relay: RelayProcess, base: str, token: str, size: int, piece: int) -> dict:
    reset = relay.reset_peak_rss()
    before = relay.memory()
    times = asyncio.run(_blob(base, token, size, piece))
    after = relay.memory()
    return {"mib": size / MIB, "piece_mib": piece / MIB,
            "upload_mb_s": size / times["upload_s"] / 1e6,
            "download_mb_s": size / times["download_s"] / 1e6,
            "rss_before_mib": before["VmRSS"], "peak_rss_mib": after["VmHWM"],
            "processes": len(relay.pids()), "pss_after_mib": after["Pss"],
            "peak_since": "blob phase" if reset else "relay start"}


# -- the whole run -----------------------------------------------------------------------------

def run(args, folder: Path, uvloop: bool, loadgen: str) -> dict:
    """Start a relay, measure everything against it, stop it."""
    seeds = [(IdentityKey.generate().seed(), EncryptionKey.generate().private_bytes())
             for _ in range(MEMBERS)]
    data_dir = folder / ("data-uvloop" if uvloop else "data")
    data_dir.mkdir()
    relay = RelayProcess(data_dir, uvloop=uvloop, access_log=args.access_log,
                         workers=args.relay_workers)
    try:
        # The genesis names the relay's key, which the relay created on its first start.
        seed = bytes.fromhex((data_dir / RELAY_KEY_FILE).read_text(encoding="ascii").strip())
        entries = build_log(seeds, int(time.time()), IdentityKey.from_seed(seed).public)
        tokens = asyncio.run(setup_network(relay.url, data_dir, seeds, entries))
        submit_url = f"{relay.url}/v1/networks/{NETWORK}/messages"
        senders = list(range(1, MEMBERS))
        ring = lambda i: i % (MEMBERS - 1) + 1       # noqa: E731  m01 -> m02, ..., m50 -> m01
        rows = []
        for connections in args.senders:
            warm_file = seal_requests(folder, "warm", WARMUP_ENVELOPES, senders, ring,
                                      seeds, entries, tokens)
            warm = measure_submits(relay, submit_url, warm_file, connections, WARMUP_SECONDS,
                                   loadgen, args.workers)
            count = int((warm["created"] + warm["repeated"]) / warm["seconds"] * args.seconds
                        * POOL_MARGIN) + 500
            file = seal_requests(folder, f"submit-{connections}", count, senders, ring,
                                 seeds, entries, tokens)
            print(f"  {connections} sender(s) for {args.seconds} s over {count} pre-sealed "
                  "envelopes ...", file=sys.stderr)
            spy = None                  # the relay, or (with workers) its last worker
            if args.py_spy and connections == max(args.senders):
                spy = subprocess.Popen(     # samples every relay thread; idle time left out
                    ["py-spy", "record", "--pid", str(relay.pids()[-1]), "--threads", "--nonblocking",
                     "--format", "raw", "--rate", "250", "--duration", str(args.seconds),
                     "--output", str(args.py_spy)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rows.append(measure_submits(relay, submit_url, file, connections, args.seconds,
                                        loadgen, args.workers))
            if spy is not None:
                spy.wait(args.seconds + 60)
            if rows[-1]["other_cpu_pct"] > BUSY_WARNING:
                print(f"warning: other processes used {rows[-1]['other_cpu_pct']:.0f}% CPU "
                      "meanwhile; the figures are low", file=sys.stderr)
            if rows[-1]["repeated"]:
                print(f"warning: the pool of envelopes ran out ({rows[-1]['repeated']} "
                      "idempotent repeats, not counted)", file=sys.stderr)
            for path in (warm_file, file):
                path.unlink()
        print(f"  push latency over {args.push} messages ...", file=sys.stderr)
        push_file = seal_requests(folder, "push", args.push, [1], lambda _: 2, seeds, entries,
                                  tokens)
        body_bytes = len(read_requests(push_file)[0][1])
        push = measure_push(relay.url, push_file, tokens[2], args.push_gap / 1000)
        print(f"  blob of {args.blob_mib} MiB ...", file=sys.stderr)
        blob = measure_blob(relay, relay.url, tokens[1], args.blob_mib * MIB, args.piece_mib * MIB)
    finally:
        code = relay.stop()
    return {"event_loop": "uvloop" if uvloop else "asyncio", "submit_body_bytes": body_bytes,
            "submits": rows, "push": push, "blob": blob, "relay_exit_code": code}


def machine() -> dict:
    model = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"nproc": os.cpu_count(), "cpu": model.group(1) if model else platform.processor(),
            "python": platform.python_version(), "platform": platform.platform(),
            "aiohttp": aiohttp.__version__, "sqlite": sqlite3.sqlite_version, "commit": commit}


def print_table(result: dict) -> None:
    m, s = result["machine"], result["settings"]
    print(f"relay benchmark, {m['nproc']} x {m['cpu']}, Python {m['python']}, "
          f"SQLite {m['sqlite']}, aiohttp {m['aiohttp']}, {m['commit']}")
    for r in result["runs"]:
        print(f"\n{r['event_loop']}: {r['submit_body_bytes']}-byte submit bodies (1 recipient), "
              f"synchronous=FULL, access log {'on' if s['access_log'] else 'off'}, "
              f"load from {s['loadgen']}, {s['seconds']} s per row")
        print("| senders | messages/s | p50 ms | p99 ms | relay CPU (loop + other threads) "
              "| load CPU | other CPU |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for x in r["submits"]:
            print(f"| {x['senders']} | {x['messages_per_s']:.0f} | {x['p50_ms']:.2f} | "
                  f"{x['p99_ms']:.2f} | {x['relay_cpu_pct']:.0f}% "
                  f"({x['relay_loop_thread_cpu_pct']:.0f} + "
                  f"{x['relay_other_threads_cpu_pct']:.0f}) | {x['loadgen_cpu_pct']:.0f}% | "
                  f"{x['other_cpu_pct']:.0f}% |")
        p, b = r["push"], r["blob"]
        print(f"push, {p['events']} of {p['messages']} events: after the submit returned p50 "
              f"{p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms ({p['arrived_before_return']} "
              f"came first); after it was sent p50 {p['from_send_p50_ms']:.2f} ms, p99 "
              f"{p['from_send_p99_ms']:.2f} ms")
        print(f"blob, {b['mib']:.0f} MiB in {b['piece_mib']:.0f} MiB pieces: upload "
              f"{b['upload_mb_s']:.0f} MB/s, download {b['download_mb_s']:.0f} MB/s; relay peak "
              f"RSS {b['peak_rss_mib']:.0f} MiB (largest of {b['processes']} processes, since "
              f"{b['peak_since']}; {b['rss_before_mib']:.0f} MiB before); all processes "
              f"{b['pss_after_mib']:.0f} MiB PSS after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="about 20 s: 3 s per row, 100 push messages, a 64 MiB blob")
    parser.add_argument("--seconds", type=int, default=8, help="timed seconds per sender count")
    parser.add_argument("--senders", default="1,50", help="concurrency levels, comma-separated")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                        help="auto: wrk when installed, else Python processes")
    parser.add_argument("--workers", type=int, default=2, help="Python load processes")
    parser.add_argument("--push", type=int, default=300, help="messages for push latency")
    parser.add_argument("--push-gap", type=float, default=3.0, help="ms between push submits")
    parser.add_argument("--blob-mib", type=int, default=256)
    parser.add_argument("--piece-mib", type=int, default=16)
    parser.add_argument("--relay-workers", type=int, default=os.cpu_count() or 1,
                        help="the relay's --workers (default: one per core)")
    parser.add_argument("--uvloop", action="store_true",
                        help="then measure everything again with the relay on uvloop")
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                        help="the relay's access log (on, as shipped)")
    parser.add_argument("--py-spy", type=Path, metavar="FILE",
                        help="profile the relay under the largest sender count "
                             "(py-spy collapsed stacks to FILE)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="folder for the relay's data: put it on the disk you deploy on")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.push, args.blob_mib = 3, 100, 64
    args.senders = [int(n) for n in args.senders.split(",")]
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    elif loadgen == "wrk" and not shutil.which("wrk"):
        raise SystemExit("error: wrk is not installed\nhint: apt-get install wrk, "
                         "or use --loadgen python")
    if args.uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise SystemExit("error: --uvloop needs uvloop\nhint: pip install uvloop") from None

    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="comity-bench-relay-") as tmp:
        runs = []
        for uvloop in [False] + [True] * args.uvloop:
            print(f"relay on {'uvloop' if uvloop else 'asyncio'} ...", file=sys.stderr)
            runs.append(run(args, Path(tmp), uvloop, loadgen))
    result = {
        "benchmark": "relay end to end over loopback (bench/relay.py)",
        "machine": machine(),
        "settings": {"seconds": args.seconds, "loadgen": loadgen, "workers": args.workers,
                     "access_log": args.access_log, "rate_limit_per_member": 1_000_000,
                     "synchronous": "FULL", "blob_mib": args.blob_mib,
                     "piece_mib": args.piece_mib, "push": args.push,
                     "push_gap_ms": args.push_gap},
        "runs": runs,
        "total_seconds": round(time.monotonic() - started, 1),
    }
    print_table(result)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "relay.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
