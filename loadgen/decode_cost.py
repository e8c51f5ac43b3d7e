"""Micro-benchmark: decoding client frames with wsproto vs runtime.protocol.websocket (not a test).

    python -m loadgen.decode_cost [--frames 100000] [--repeat 3]

Encodes ``--frames`` masked ~150-byte text frames (a presence update) with
wsproto's client, cuts the stream into 64 KB reads (the server's
``RECEIVE_CHUNK``), and times, in CPU seconds of this process, feeding them
to wsproto's server ``Connection`` (``receive_data`` + ``events``, counting
finished messages as the old connection did) and to ``ServerWebSocket``.
Each decoder runs ``--repeat`` times, interleaved, so a busy machine slows both.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from wsproto.connection import Connection, ConnectionType
from wsproto.events import Message
from wsproto.frame_protocol import FrameProtocol

from runtime.protocol.websocket import ServerWebSocket
from runtime.transport.connection import RECEIVE_CHUNK

MESSAGE = (
    '{"type":"presence:update","sessionId":"storm","state":{"cursor":[512,384],'
    '"status":"active","color":"#3b82f6","label":"user-0042"},"ref":12345}'
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n: int = args.frames

    client = FrameProtocol(client=True, extensions=[])  # a fresh random mask per frame
    stream = b"".join(bytes(client.send_data(MESSAGE)) for _ in range(n))
    chunks = [stream[i : i + RECEIVE_CHUNK] for i in range(0, len(stream), RECEIVE_CHUNK)]
    print(f"{n} frames of {len(stream) // n} B ({len(MESSAGE)} B payload), {len(chunks)} reads")

    def with_wsproto() -> int:
        conn = Connection(ConnectionType.SERVER)
        count = 0
        for chunk in chunks:
            conn.receive_data(chunk)
            for event in conn.events():
                # A frame cut by a read comes as two events; count whole messages.
                if isinstance(event, Message) and event.message_finished:
                    count += 1
        return count

    def with_ours() -> int:
        ws = ServerWebSocket(65536)
        count = 0
        for chunk in chunks:
            for event in ws.receive_data(chunk):
                if isinstance(event, str):
                    count += 1
        return count

    runs: dict[str, list[float]] = {"wsproto": [], "ours": []}
    decoders: dict[str, Callable[[], int]] = {"wsproto": with_wsproto, "ours": with_ours}
    for _ in range(args.repeat):
        for name, decode in decoders.items():
            started = time.process_time()
            assert decode() == n
            runs[name].append(n / (time.process_time() - started))
    for name, rates in runs.items():
        shown = ", ".join(f"{rate:,.0f}" for rate in rates)
        print(f"{name:8s} best {max(rates):,.0f} frames/s  (runs: {shown})")
    print(f"ratio of bests: {max(runs['ours']) / max(runs['wsproto']):.1f}x")


if __name__ == "__main__":
    main()
