"""``comity demo``: the whole flow on this machine, explained step by step.

A real relay runs as a child process on a free loopback port, in a temporary
folder; four members each get their own temporary COMITY_HOME. Everything is
removed at the end, whatever happens.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .api import Comity
from .errors import ClientError

RELAY = [sys.executable, "-c", "from relay.cli import main; main()"]
PASSPHRASE = "demo only: not a real passphrase"
#: seconds to wait for the demo relay to start
START_TIMEOUT = 30


def _step(n: int, text: str) -> None:
    print(f"\n{n}. {text}", flush=True)


def _detail(text: str) -> None:
    print(f"   {text}", flush=True)


def _start_relay(folder: Path) -> tuple[subprocess.Popen, str, str]:
    process = subprocess.Popen(RELAY + ["serve", "--port", "0", "--data-dir", str(folder / "relay")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()     # "listening on URL", printed when ready
    if not line.startswith("listening on "):
        process.kill()
        raise ClientError("the demo relay did not start")
    fingerprint = process.stdout.readline().strip()
    return process, line.split()[-1], fingerprint


def run_demo(quiet: bool = False) -> None:
    folder = Path(tempfile.mkdtemp(prefix="comity-demo-"))
    process = None
    try:
        _step(1, "Start a relay: the store-and-forward server. It only ever holds ciphertext.")
        process, url, fingerprint = _start_relay(folder)
        _detail(f"relay running at {url} ({fingerprint})")

        _step(2, "The relay operator mints a one-time token to create the network 'refco-demo'.")
        token = subprocess.run(RELAY + ["token", "--network", "refco-demo", "--data-dir", str(folder / "relay")],
                               capture_output=True, text=True, check=True).stdout.strip()
        _detail("token handed to the network's administrator")
        asyncio.run(_walk(folder, url, token))
        print("\nDone. Everything the demo created has been removed.")
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(folder, ignore_errors=True)


async def _walk(folder: Path, url: str, token: str) -> None:
    people = {}
    try:
        admin = people["admin"] = Comity.at(folder / "admin")
        admin.create_identity("secretariat", PASSPHRASE)
        _step(3, "The secretariat creates the network and becomes its first administrator.")
        created = await admin.create_network("refco-demo", url, token, name_text="REFCO secretariat", country="SV")
        _detail(f"network fingerprint {created['fingerprint']} (shared with members out of band)")

        _step(4, "It invites two focal points. Each invite is one line of text, sent out of band.")
        codes = {}
        for handle, name, country in (("fiscalia.gt", "Fiscalía General, Guatemala", "GT"),
                                      ("mp.hn", "Ministerio Público, Honduras", "HN")):
            codes[handle] = await admin.invite("refco-demo", handle, name_text=name, country=country)
            _detail(f"invite for {handle}: {codes[handle][:32]}...")

        _step(5, "Each focal point enrolls: its keys are made on its own machine and never leave it.")
        read_out = {}
        for handle, code in codes.items():
            person = people[handle] = Comity.at(folder / handle)
            enrolled = await person.enroll(code, PASSPHRASE)
            read_out[handle] = enrolled["fingerprint"]     # what it reads to the administrator
            _detail(f"{handle} enrolled, fingerprint {enrolled['fingerprint']}")

        _step(6, "The administrator checks each enrollment against its invite, and approves only the "
                 "fingerprint the focal point read out.")
        for item in await admin.pending("refco-demo"):
            approved = await admin.approve("refco-demo", item.handle, fingerprint=read_out[item.handle])
            _detail(f"approved {approved['handle']}, fingerprint {approved['fingerprint']}")

        _step(7, "Guatemala sends Honduras a signed, encrypted MLA request with an attached annex.")
        annex = folder / "annex-bank-records.txt"
        annex.write_text("Account 0042-17: transfers of 14 and 21 March (illustrative data).\n", encoding="utf-8")
        sent = await people["fiscalia.gt"].send(
            "refco-demo", ["mp.hn"],
            {"type": "request", "subject": "MLA request 2026/114: bank records", "priority": "urgent",
             "reference": "FGN-2026-114"},
            "Under the Central American MLA Treaty, we request the records described in the annex.",
            [annex])
        receipt = sent["relay_receipt"]
        _detail(f"message {sent['id']} accepted by the relay; its signed receipt names "
                f"recipients {', '.join(receipt['recipients'])}")

        _step(8, "Honduras collects its mail: every signature and key is checked against the membership log.")
        for message in await people["mp.hn"].inbox():
            _detail(f"{message['id']} from {message['from']}: '{message['subject']}' "
                    f"({'verified' if message['verified'] else 'NOT verified'})")

        _step(9, "It reads the request and saves the annex.")
        out = folder / "received"
        message = people["mp.hn"].read(sent["id"], out)
        _detail(f"body: {message['body']}")
        for a in message["attachments"]:
            same = Path(a["saved_to"]).read_bytes() == annex.read_bytes()
            _detail(f"annex saved ({a['size']} bytes), identical to what was sent: {same}")
    finally:
        for person in people.values():
            await person.close()
