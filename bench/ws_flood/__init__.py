"""bench_ws_flood.py's client side (client): the flood and the measured viewer's sockets."""
