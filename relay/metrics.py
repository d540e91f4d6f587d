"""Prometheus text exposition for ``/metrics``.

Counters live in process memory (they reset on restart, as Prometheus
expects); gauges such as stored messages and the writer queue depth are read
at scrape time. With several workers, the worker that answers a scrape asks its
siblings for their counters (relay/cluster.py) and reports the sums, so a
scrape sees the whole relay whichever worker it reaches.
"""

from __future__ import annotations

from collections import Counter

HELP = {
    "comity_requests_total": ("counter", "HTTP requests answered, by method, route and status"),
    "comity_messages_accepted_total": ("counter", "envelopes accepted (new, not retries)"),
    "comity_messages_delivered_total": ("counter", "envelopes fetched by a recipient for the first time"),
    "comity_bytes_received_total": ("counter", "envelope and blob bytes received"),
    "comity_bytes_sent_total": ("counter", "envelope and blob bytes sent"),
    "comity_auth_failures_total": ("counter", "failed authentication attempts"),
    "comity_rate_limited_total": ("counter", "requests refused by a rate limit"),
    "comity_push_events_total": ("counter", "new-mail events pushed"),
    "comity_connections_shed_total": ("counter", "connections closed or refused to protect the "
                                      "relay, by reason (relay/connections.py)"),
    "comity_messages_stored": ("gauge", "envelopes held"),
    "comity_message_bytes_stored": ("gauge", "bytes of envelopes held"),
    "comity_blobs_stored": ("gauge", "attachment blobs held"),
    "comity_blob_bytes_stored": ("gauge", "declared bytes of attachment blobs held"),
    "comity_write_queue_depth": ("gauge", "writes waiting for the database writer"),
    "comity_websocket_connections": ("gauge", "open push connections"),
    "comity_workers_reporting": ("gauge", "worker processes whose counters this scrape includes"),
}


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}"


class Metrics:
    def __init__(self) -> None:
        self._counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        assert name in HELP, name
        self._counters[(name, tuple(sorted(labels.items())))] += amount

    def snapshot(self) -> list:
        """The counters as JSON-ready ``[name, [[label, value]...], count]`` items."""
        return [[name, [list(pair) for pair in labels], value]
                for (name, labels), value in self._counters.items()]

    def add(self, snapshot: list) -> None:
        """Add another worker's ``snapshot()`` (unknown names are ignored)."""
        for name, labels, value in snapshot:
            if name in HELP and isinstance(value, int):
                self._counters[(name, tuple(tuple(pair) for pair in labels))] += value

    def value(self, name: str, **labels: str) -> int:
        return self._counters[(name, tuple(sorted(labels.items())))]

    def render(self, gauges: dict[str, int]) -> str:
        lines = []
        for name, (kind, text) in HELP.items():
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "gauge":
                lines.append(f"{name} {gauges.get(name, 0)}")
                continue
            samples = [(labels, v) for (n, labels), v in sorted(self._counters.items()) if n == name]
            if not samples:
                lines.append(f"{name} 0")
            for labels, value in samples:
                lines.append(f"{name}{_labels(labels)} {value}")
        return "\n".join(lines) + "\n"
