"""Micro-benchmark: the cost of decoding one small client message (not a test).

    python -m loadgen.decode_message_cost [--iterations 100000] [--repeat 3]

Every inbound WebSocket message goes through ``runtime.protocol.codec.decode``
(``orjson.loads``, the input limits, then structuring into an attrs message),
so in a presence storm its per-message cost is a large share of the server's
CPU. This times, in CPU seconds of this process, ``decode`` and
``Limits.check_json`` alone for the two hottest messages (a presence update
and an event publish with the load generator's 40-byte pad), ``--iterations``
calls each, best of ``--repeat`` interleaved runs, and prints µs per message.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from runtime.protocol.codec import DecodeError, decode
from runtime.security.validation import Limits

PRESENCE = orjson.dumps(
    {
        "type": "presence:update",
        "sessionId": "bench-0",
        "state": {"pt": 1795000000000000, "pc": 123, "pad": "x" * 40},
    }
)
PUBLISH = orjson.dumps(
    {
        "type": "event:publish",
        "sessionId": "bench-0",
        "name": "bench",
        "data": {"t": 1795000000000000, "pad": "x" * 40},
        "ref": "r1",
    }
)


def _timed(fn: Callable[[], object], n: int) -> float:
    """CPU µs per call of ``fn`` over ``n`` calls."""
    started = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n: int = args.iterations
    limits = Limits()

    cases: dict[str, Callable[[], object]] = {}
    for label, payload in (("presence:update", PRESENCE), ("event:publish", PUBLISH)):
        (message,) = decode(payload, limits)
        assert not isinstance(message, DecodeError), message
        value = orjson.loads(payload)
        assert limits.check_json(value) is None
        cases[f"{label} decode"] = lambda p=payload: decode(p, limits)
        cases[f"{label} check_json"] = lambda v=value: limits.check_json(v)
        cases[f"{label} orjson.loads"] = lambda p=payload: orjson.loads(p)

    runs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, fn in cases.items():
            runs[name].append(_timed(fn, n))
    print(f"{n} calls each, best of {args.repeat}, CPU µs per message")
    for name, costs in runs.items():
        shown = ", ".join(f"{c:.2f}" for c in costs)
        print(f"{name:32s} {min(costs):6.2f} µs  (runs: {shown})")


if __name__ == "__main__":
    main()
