"""A TCP stream through the mesh that must survive path switches: a counting sender and a checking receiver.

Run as `python agent_mesh_stream.py serve IP PORT` (prints a JSON verdict when the stream ends) and
`python agent_mesh_stream.py send IP PORT STOPFILE` (sends numbered 1 KiB chunks every 20 ms until
STOPFILE exists, then closes; exits non-zero if the connection broke).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

CHUNK = 1024


def chunk(i: int) -> bytes:
    return i.to_bytes(8, "big") * (CHUNK // 8)


def serve(ip: str, port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ip, port))
    srv.listen(1)
    srv.settimeout(60)
    print("listening", flush=True)
    conn, _ = srv.accept()
    buf, n, ok, err = b"", 0, True, None
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            buf += data
            while len(buf) >= CHUNK:
                if buf[:CHUNK] != chunk(n):
                    ok = False
                buf, n = buf[CHUNK:], n + 1
    except OSError as e:
        ok, err = False, str(e)
    print(json.dumps({"chunks": n, "in_order": ok, "leftover": len(buf), "error": err}), flush=True)


def send(ip: str, port: int, stop: str) -> None:
    s = socket.create_connection((ip, port), timeout=5)
    s.settimeout(60)
    i = 0
    while not os.path.exists(stop):
        s.sendall(chunk(i))
        i += 1
        time.sleep(0.02)
    s.shutdown(socket.SHUT_WR)
    s.close()
    print(json.dumps({"sent": i}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        send(sys.argv[2], int(sys.argv[3]), sys.argv[4])
