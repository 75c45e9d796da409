"""The ECR/1 plugin's metrics, registered in the registry the gateway passes in."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.frames = Counter(
            "gateway_ecr_frames_total", "ECR/1 frames received (in) and sent (out, resends too)",
            ["device", "direction"], registry=registry)
        self.rejects = Counter(
            "gateway_ecr_rejects_total",
            "ECR/1 frames and requests refused: length, crc, etx, body, timeout, eof, bad_request",
            ["device", "reason"], registry=registry)
        self.garbage = Counter(
            "gateway_ecr_garbage_bytes_total", "Bytes skipped outside any ECR/1 frame",
            ["device"], registry=registry)
        self.retransmits = Counter(
            "gateway_ecr_retransmits_total", "Response frames sent again after a NAK or no ACK",
            ["device"], registry=registry)
        self.link_errors = Counter(
            "gateway_ecr_link_errors_total", "Response frames given up without an ACK",
            ["device"], registry=registry)
        self.responses = Counter(
            "gateway_ecr_responses_total", "Responses by result: ok, or the refusal's code",
            ["device", "result"], registry=registry)
        self.answers_dropped = Counter(
            "gateway_ecr_answers_dropped_total",
            "Responses the terminal never took: retries (sent 4 times, never ACKed), stale (waited "
            "longer than its sends would take, unsent), full (1024 already waiting), closed",
            ["device", "reason"], registry=registry)
        self.shed = Counter(
            "gateway_ecr_requests_shed_total",
            "Requests answered UNAVAILABLE at once because the line already had its most waiting",
            ["device"], registry=registry)
        self.log_suppressed = Counter(
            "gateway_ecr_log_lines_suppressed_total",
            "Log lines not written because the same message repeated within a minute (summarised)",
            ["device"], registry=registry)
        self.received = Counter(
            "gateway_ecr_received_bytes_total", "Bytes read from the terminal's line",
            ["device"], registry=registry)
        self.connected = Gauge(
            "gateway_ecr_connected", "1 while the terminal's port is open", ["device"],
            registry=registry)
