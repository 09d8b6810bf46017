#!/usr/bin/env python3
# A misbehaving HTTP/2 client for benches/soak.sh, in a loop until SIGTERM: every connection
# (h2c prior knowledge, or TLS with ALPN h2) plays the next of the scenarios below with raw
# frames, reads what the proxy sends for a moment, and closes, most of them abruptly (a TCP RST,
# no GOAWAY, no TLS close_notify). Counters go to STATS as JSON every 2 s and at SIGTERM:
# connections, connect failures, response heads seen, and the RST_STREAM and GOAWAY codes the
# proxy sent, per scenario.
#   h2abuse.py HOST PORT TLS(0|1) AUTHORITY PAID_PATH PAID_AUTH GRPC_PATH GRPC_AUTH STATS INTERVAL
import json, signal, socket, ssl, struct, sys, time
host, port, tls, authority = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
paid_path, paid_auth, grpc_path, grpc_auth = sys.argv[5:9]
stats_path, interval = sys.argv[9], float(sys.argv[10])
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 1, 4, 1
stats = {"connections": 0, "connect_failures": 0, "responses": 0, "rst_from_proxy": {},
         "goaway": {}, "scenarios": {}}

def write_stats(*_):
    with open(stats_path, "w") as f:
        json.dump(stats, f)
def stop(*_):
    write_stats(); sys.exit(0)
signal.signal(signal.SIGTERM, stop)

def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload
def hstr(s):
    s = s.encode() if isinstance(s, str) else s
    return hint(0, 7, len(s)) + s
def hint(first, n, v):
    mx = (1 << n) - 1
    if v < mx:
        return bytes([first | v])
    out = bytearray([first | mx]); v -= mx
    while v >= 128:
        out.append((v % 128) | 0x80); v //= 128
    out.append(v)
    return bytes(out)
def block(method, path, fields):
    scheme = "https" if tls else "http"
    out = bytearray()
    for name, value in [(":method", method), (":scheme", scheme), (":path", path),
                        (":authority", authority)] + fields:
        out += b"\x00" + hstr(name) + hstr(value)  # literal without indexing, new name
    return bytes(out)
def get(stream, end=True):
    return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), stream,
                 block("GET", paid_path, [("authorization", paid_auth)]))
def post(stream, length):
    return frame(HEADERS, END_HEADERS, stream, block("POST", grpc_path, [
        ("authorization", grpc_auth), ("content-type", "application/grpc"), ("te", "trailers"),
        ("content-length", str(length))]))

def connect():
    s = socket.create_connection((host, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        s = ctx.wrap_socket(s, server_hostname="localhost")
        assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
    s.sendall(PREFACE + frame(SETTINGS, 0, 0))
    return s

def drain(s, seconds):
    """Reads frames for up to `seconds`; counts responses, resets and GOAWAYs; acks SETTINGS."""
    s.settimeout(0.05)
    buf = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data = s.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except OSError:
            return
        if not data:
            return
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, flags = buf[3], buf[4]
            payload = buf[9:9 + length]
            buf = buf[9 + length:]
            if kind == HEADERS:
                stats["responses"] += 1
            elif kind == RST:
                code = f"{current}:{int.from_bytes(payload[:4], 'big')}"
                stats["rst_from_proxy"][code] = stats["rst_from_proxy"].get(code, 0) + 1
            elif kind == SETTINGS and not flags & ACK:
                try:
                    s.sendall(frame(SETTINGS, ACK, 0))
                except OSError:
                    return
            elif kind == GOAWAY and len(payload) >= 8:
                code = f"{current}:{int.from_bytes(payload[4:8], 'big')}"
                stats["goaway"][code] = stats["goaway"].get(code, 0) + 1

def abort(s):
    """Closes with a TCP RST (SO_LINGER 0), no GOAWAY, no close_notify."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()

def rapid_reset(s):  # open a stream, reset it at once; many times
    s.sendall(b"".join(get(2 * i + 1) + frame(RST, 0, 2 * i + 1, struct.pack(">I", 8)) for i in range(100)))
    drain(s, 0.2); abort(s)
def reset_mid_upload(s):  # gRPC POST, part of the body, RST_STREAM CANCEL; then a good request
    for i in range(10):
        sid = 2 * i + 1
        s.sendall(post(sid, 1000) + frame(DATA, 0, sid, b"\0" * 300) + frame(RST, 0, sid, struct.pack(">I", 8)))
    s.sendall(get(21))
    drain(s, 0.3); abort(s)
def ping_settings_burst(s):  # 30 PINGs and 30 SETTINGS, a request between, then more
    burst = b"".join(frame(PING, 0, 0, struct.pack(">Q", i)) + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535 + i)) for i in range(30))
    s.sendall(burst + get(1) + burst)
    drain(s, 0.3); s.close()
def abort_mid_body(s):  # gRPC POST announcing 1000 bytes, 500 sent, connection dropped
    s.sendall(post(1, 1000) + frame(DATA, 0, 1, b"\0" * 500) + post(3, 100000) + frame(DATA, 0, 3, b"\0" * 16000))
    drain(s, 0.05); abort(s)
def abrupt_close(s):  # requests in flight, dropped before any answer is read
    s.sendall(b"".join(get(2 * i + 1) for i in range(16)) + post(33, 5) + frame(DATA, END_STREAM, 33, b"\0" * 5))
    abort(s)
def zero_window(s):  # a receive window of 0: the proxy cannot send bodies; then dropped
    s.sendall(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 0)) + b"".join(get(2 * i + 1) for i in range(8)))
    drain(s, 0.3); abort(s)
def bad_window_update(s):  # WINDOW_UPDATE 0 on open streams: the proxy resets each (MadeYouReset)
    for i in range(10):
        sid = 2 * i + 1
        s.sendall(post(sid, 10) + frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 0)))
    drain(s, 0.2); abort(s)
def goaway_then_close(s):  # requests, then our GOAWAY, then a half-read
    s.sendall(b"".join(get(2 * i + 1) for i in range(8)) + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
    drain(s, 0.05); s.close()
def protocol_error(s):  # an even stream id: GOAWAY PROTOCOL_ERROR expected
    s.sendall(get(1) + get(2))
    drain(s, 0.2); s.close()
SCENARIOS = [rapid_reset, reset_mid_upload, ping_settings_burst, abort_mid_body, abrupt_close,
             zero_window, bad_window_update, goaway_then_close, protocol_error]

current = ""
last = time.monotonic()
i = 0
while True:
    scen = SCENARIOS[i % len(SCENARIOS)]
    current = scen.__name__
    i += 1
    try:
        s = connect()
    except (OSError, AssertionError) as e:
        stats["connect_failures"] += 1
        stats.setdefault("connect_errors", {})
        k = type(e).__name__
        stats["connect_errors"][k] = stats["connect_errors"].get(k, 0) + 1
        time.sleep(interval)
        continue
    stats["connections"] += 1
    stats["scenarios"][scen.__name__] = stats["scenarios"].get(scen.__name__, 0) + 1
    try:
        scen(s)
    except OSError:
        try: s.close()
        except OSError: pass
    if time.monotonic() - last > 2:
        write_stats(); last = time.monotonic()
    time.sleep(interval)
