"""Peer servers speaking the minimal subset of Tandem's protocol v1 used by the benchmarks.

join -> session:joined; event:publish -> event (with seq) to every member + event:ack to the
publisher; presence:update -> presence to the other members; ping -> pong.
"""
