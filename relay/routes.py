"""The route table: every endpoint once, with what the OpenAPI document says of it.

``relay.app`` registers these routes and ``relay.openapi`` describes them, so
the two cannot drift apart (a test checks every registered route is described).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import web

from .handlers import blobs, enroll, events, messages, networks, ops, rotations, session

N = "/v1/networks/{network}"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    auth: str                   # "none", "member", "admin", "invite-or-member", "creation-token"
    body: tuple[str, ...] = ()  # JSON body fields (all required unless listed in optional)
    optional: tuple[str, ...] = ()
    ok: int = 200
    query: tuple[str, ...] = ()    # integer query parameters, all optional
    headers: tuple[str, ...] = ()  # request headers the route reads (besides Authorization)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", ops.healthz,
          "liveness and readiness (503 while draining, damaged or disk-full)", "none"),
    Route("GET", "/metrics", ops.metrics, "Prometheus text metrics", "none"),
    Route("GET", "/v1/relay", ops.relay_info, "the relay's public key and fingerprint", "none"),
    Route("GET", "/v1/openapi.json", ops.openapi, "this document", "none"),
    Route("POST", "/v1/networks", networks.create_network,
          "create a network from a signed genesis entry and a one-time creation token",
          "creation-token", ("token", "genesis"), ok=201),
    Route("GET", N + "/log", networks.get_log,
          "membership log entries from ?since=SEQ (page of ?limit=N); header Comity-Invite "
          "lets an enrollee read it", "invite-or-member", query=("since", "limit"),
          headers=("Comity-Invite",)),
    Route("POST", N + "/log", networks.append_log,
          "append one signed log entry; refused unless every client would accept it",
          "member", ("entry",), ok=201),
    Route("POST", N + "/auth/challenge", session.challenge,
          "a one-time challenge to sign with the identity key", "none", ("handle",)),
    Route("POST", N + "/auth/token", session.token,
          "exchange a signed challenge for a short-lived bearer token", "none",
          ("handle", "challenge", "signature")),
    Route("POST", N + "/invites", enroll.add_invite,
          "register an invite (only the hash of its secret)", "admin",
          ("invite_id", "handle", "role"), ("expires",), ok=201),
    Route("POST", N + "/enrollments", enroll.submit_enrollment,
          "submit an enrollment request answering an invite", "none", ("request",), ok=202),
    Route("GET", N + "/enrollments", enroll.list_enrollments,
          "pending enrollment requests", "admin"),
    Route("POST", N + "/rotations", rotations.submit,
          "submit my identity rotation, signed by my old and new keys, for an admin to countersign",
          "member", ("entry",), ok=202),
    Route("GET", N + "/rotations", rotations.listing,
          "identity rotations waiting for an administrator's countersignature", "admin"),
    Route("POST", N + "/messages", messages.submit,
          "submit an envelope; idempotent on its id; returns the signed submission receipt",
          "member", ("envelope",), ok=201),
    Route("GET", N + "/mailbox", messages.mailbox,
          "envelopes waiting for me after ?after=CURSOR", "member", query=("after", "limit")),
    Route("GET", N + "/messages/{id}", messages.fetch,
          "an envelope; a recipient's first fetch records a signed delivery receipt", "member"),
    Route("POST", N + "/messages/{id}/collected", messages.collected,
          "I have the envelope and its attachments", "member"),
    Route("GET", N + "/messages/{id}/status", messages.status,
          "per-recipient evidence of a message I sent", "member"),
    Route("POST", N + "/blobs", blobs.create, "declare an attachment blob of a given size",
          "member", ("size",), ok=201),
    Route("HEAD", N + "/blobs/{id}", blobs.head, "how many bytes of my upload are stored",
          "member"),
    Route("PATCH", N + "/blobs/{id}", blobs.upload,
          "append the next piece at Upload-Offset (application/offset+octet-stream)",
          "member", ok=204, headers=("Upload-Offset",)),
    Route("GET", N + "/blobs/{id}", blobs.download, "download a blob; honours Range",
          "member", headers=("Range",)),
    Route("GET", N + "/events", events.events, "WebSocket of new-mail events", "member", ok=101),
)
