"""Scraping /metrics of an in-process server, and differences between two scrapes."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from runtime.testing.server import TestServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


async def scrape(server: TestServer) -> Samples:
    status, body = await server.http("GET", "/metrics")
    assert status == 200
    assert isinstance(body, bytes)
    return parse(body.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)
