"""Prometheus metrics of ``abdus serve`` (served at ``GET /metrics``, text format 0.0.4).

Each server has its own registry, so two servers in one process (tests) count apart.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds: a tiny CPU model takes ~0.05 s, a paper-size one on a scanner CPU ~1 s; a
# destination that was down can delay a forward by minutes.
PROCESSING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FORWARD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    """The counters and latency histograms of one server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "abdus_instances_received", "DICOM instances stored in the spool", registry=r
        )
        self.rejected = Counter(
            "abdus_instances_rejected", "C-STORE requests answered with a failure", registry=r
        )
        self.processed = Counter(
            "abdus_instances_processed", "instances predicted with results written", registry=r
        )
        self.failed = Counter(
            "abdus_instances_failed", "instances moved to failed/ (not processable)", registry=r
        )
        self.forwarded = Counter(
            "abdus_results_forwarded", "result objects C-STORE'd", ["destination"], registry=r
        )
        self.forward_failed = Counter(
            "abdus_results_forward_failed",
            "result objects given up after the last retry",
            ["destination"],
            registry=r,
        )
        self.processing_seconds = Histogram(
            "abdus_processing_seconds",
            "prediction and result writing per instance (s)",
            buckets=PROCESSING_BUCKETS,
            registry=r,
        )
        self.receipt_to_forward_seconds = Histogram(
            "abdus_receipt_to_forward_seconds",
            "from receipt of an instance to its result's successful C-STORE (s)",
            buckets=FORWARD_BUCKETS,
            registry=r,
        )

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
