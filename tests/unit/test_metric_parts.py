"""Small parts of the monitoring endpoint: when a request is whole (the intake hands it
to a thread then), and the histogram kept as observations come."""

from __future__ import annotations

from node.counters import Histogram
from node.http.intake import LARGEST_REQUEST, request_complete


def test_a_request_is_whole_once_its_headers_and_declared_body_are_in() -> None:
    assert not request_complete(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    assert request_complete(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    post = b"POST /studies/1.2/retry HTTP/1.1\r\nContent-Length: 10\r\n\r\ncsrf="
    assert not request_complete(post)
    assert request_complete(post + b"abcde")
    assert request_complete(post.replace(b"Content-Length", b"content-LENGTH") + b"abcde")
    # a body declared larger than is ever read is the handler's to refuse
    huge = f"POST / HTTP/1.1\r\nContent-Length: {LARGEST_REQUEST + 1}\r\n\r\n".encode()
    assert request_complete(huge)


def test_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    histogram = Histogram((1, 5, 10))
    for value in (0.5, 1, 3, 5, 7, 50):
        histogram.observe(value)
    cumulative, total, count = histogram.snapshot()
    assert cumulative == [2, 4, 5]
    assert count == 6 and total == 66.5
