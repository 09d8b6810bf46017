"""Python `h2` 4.2.0 (an independent HTTP/2 stack) as a client peer over a real socket against the
proxy's h2c listener (prior knowledge); driven by tests/it/h2_peer.rs.

  h2_peer.py check                      exit 0 when h2 4.2.0 is importable
  h2_peer.py HOST:PORT SCENARIO...      runs each scenario on its own connection, prints
                                        {scenario: result} as JSON

h2's client state machine validates everything the server writes (frames, flags, header blocks
and their HPACK state, response header fields, windows, stream states) and raises on any
violation: a scenario where it raised reports {"error": "..."}. Every frame received is also
parsed by hyperframe beside h2, so a scenario can report what was on the wire (frame sizes, the
HPACK representations of response blocks). Invalid requests are sent with h2's outbound checks
off, or as raw frames on the same socket after the h2 handshake.
"""
import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
from h2.settings import SettingCodes
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              RstStreamFrame, WindowUpdateFrame)

WAIT = 20.0


class Timeout(Exception):
    pass


class Peer:
    """One h2c connection: h2 drives it, hyperframe records what the server wrote."""

    def __init__(self, addr, settings=None, validate=True):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=WAIT)
        cfg = h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8",
            validate_outbound_headers=validate, normalize_outbound_headers=validate,
            validate_inbound_headers=True, normalize_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        if settings:
            values = {SettingCodes.MAX_CONCURRENT_STREAMS: 100}
            values.update(settings)
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=values)
        self.pending = bytearray()
        self.frames = []      # (type name, flags, stream, length) of every frame received
        self.blocks = {}      # stream -> header block payloads received (HEADERS + CONTINUATION)
        self.streams = {}     # stream -> what came back on it
        self.acks = 0         # SETTINGS ACKs received
        self.remote_settings = False
        self.pings = []
        self.terminated = None
        self.closed = False
        self.deadline = time.monotonic() + 4 * WAIT
        self.conn.initiate_connection()
        self.flush()
        self.until(lambda: self.remote_settings and self.acks >= 1)

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def raw(self, frame_bytes):
        """Bytes on the socket that h2's state machine does not know about."""
        self.sock.sendall(frame_bytes)

    def stream(self, sid):
        return self.streams.setdefault(sid, {"status": None, "headers": [], "body": b"",
                                             "trailers": None, "ended": False, "reset": None})

    def record(self, data):
        self.pending += data
        while len(self.pending) >= 9:
            f, length = Frame.parse_frame_header(memoryview(bytes(self.pending[:9])))
            if len(self.pending) < 9 + length:
                break
            f.parse_body(memoryview(bytes(self.pending[9:9 + length])))
            del self.pending[:9 + length]
            self.frames.append((type(f).__name__, sorted(f.flags), f.stream_id, length))
            if isinstance(f, (HeadersFrame, ContinuationFrame)):
                self.blocks.setdefault(f.stream_id, []).append(bytes(f.data))

    def pump(self):
        """One read: the server's frames through h2 (which raises on any violation)."""
        if time.monotonic() > self.deadline:
            raise Timeout("scenario deadline")
        try:
            data = self.sock.recv(65536)
        except socket.timeout as e:
            raise Timeout("no frame from the server") from e
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return
        self.record(data)
        for e in self.conn.receive_data(data):
            self.event(e)
        self.flush()

    def event(self, e):
        if isinstance(e, h2.events.ResponseReceived):
            s = self.stream(e.stream_id)
            s["headers"] = [[n, v] for n, v in e.headers]
            s["status"] = int(dict(e.headers)[":status"])
        elif isinstance(e, h2.events.DataReceived):
            self.stream(e.stream_id)["body"] += e.data
            self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        elif isinstance(e, h2.events.TrailersReceived):
            self.stream(e.stream_id)["trailers"] = [[n, v] for n, v in e.headers]
        elif isinstance(e, h2.events.StreamEnded):
            self.stream(e.stream_id)["ended"] = True
        elif isinstance(e, h2.events.StreamReset):
            self.stream(e.stream_id)["reset"] = int(e.error_code)
        elif isinstance(e, h2.events.ConnectionTerminated):
            self.terminated = {"code": int(e.error_code), "last_stream": e.last_stream_id}
        elif isinstance(e, h2.events.PingAckReceived):
            self.pings.append(e.ping_data.hex())
        elif isinstance(e, h2.events.RemoteSettingsChanged):
            self.remote_settings = True
        elif isinstance(e, h2.events.SettingsAcknowledged):
            self.acks += 1

    def until(self, cond):
        while not cond():
            if self.closed:
                return False
            self.pump()
        return True

    def done(self, sid):
        s = self.stream(sid)
        return s["ended"] or s["reset"] is not None

    def request(self, path, method="GET", extra=(), end=True):
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "http"), (":path", path),
                   (":authority", "h2-peer.test")] + list(extra)
        self.conn.send_headers(sid, headers, end_stream=end)
        self.flush()
        return sid

    def send_body(self, sid, body, piece=None, pad=None):
        """Sends `body` as the windows the server grants allow (h2 raises past them), in pieces
        of at most `piece` bytes, each DATA frame padded with `pad` bytes when given."""
        view = memoryview(body)
        extra = 0 if pad is None else pad + 1
        while view:
            if self.done(sid) or self.closed:
                return
            room = min(self.conn.local_flow_control_window(sid),
                       self.conn.max_outbound_frame_size) - extra
            room = min(room, piece or room)
            if room <= 0:
                self.pump()
                continue
            self.conn.send_data(sid, bytes(view[:room]), pad_length=pad)
            view = view[room:]
            self.flush()

    def get(self, path, **kw):
        sid = self.request(path, **kw)
        self.until(lambda: self.done(sid))
        return sid

    def outcome(self, sid):
        s = self.stream(sid)
        return {"status": s["status"], "body": s["body"].decode("latin-1"),
                "ended": s["ended"], "reset": s["reset"]}

    def close(self):
        self.sock.close()


def data_frames(peer):
    sizes = [n for kind, _, _, n in peer.frames if kind == "DataFrame"]
    return {"data_frames": len(sizes), "max_data_frame": max(sizes, default=0)}


# ---------- valid ----------

def s_get(addr):
    p = Peer(addr)
    return p.outcome(p.get("/peer/get"))


def s_continuation(addr):
    # A 40,000-byte field: h2 sends the block as HEADERS + CONTINUATIONs (16,384 each), after
    # a PRIORITY frame for the stream (to be ignored, RFC 9113 §5.3.2).
    p = Peer(addr)
    sid = p.conn.get_next_available_stream_id()
    p.conn.prioritize(sid, weight=32)
    p.flush()
    sid = p.get("/echo", extra=[("x-big", "b" * 40000)])
    out = p.outcome(sid)
    body = out.pop("body")
    out["forwarded_big"] = ("x-big: " + "b" * 40000 + "\r\n") in body
    return out


def s_concurrent(addr):
    p = Peer(addr)
    sids = [p.request(f"/peer/c{i}") for i in range(50)]
    p.until(lambda: all(p.done(s) for s in sids))
    return {"streams": len(set(sids)), "outcomes": [p.outcome(s) for s in sids]}


def s_post_big(addr, piece=None, pad=None):
    p = Peer(addr)
    body = bytes(i % 251 for i in range(300 * 1024))
    sid = p.request("/echo", method="POST", end=False,
                    extra=[("content-length", str(len(body))),
                           ("content-type", "application/octet-stream")])
    p.send_body(sid, body, piece=piece, pad=pad)
    if not p.done(sid):
        p.conn.end_stream(sid)
        p.flush()
    p.until(lambda: p.done(sid))
    s = p.stream(sid)
    head = s["body"][:-len(body)] if s["body"].endswith(body) else b""
    return {"status": s["status"], "reset": s["reset"], "ended": s["ended"],
            "echoed_body": s["body"].endswith(body), "origin_head": head.decode("latin-1"),
            "window_updates_for_stream": sum(1 for k, _, st, _ in p.frames
                                             if k == "WindowUpdateFrame" and st == sid)}


def s_post_padded(addr):
    # The same body in 1 KiB pieces, each DATA frame padded with 255 bytes: padding counts
    # against both windows (RFC 9113 §6.9.1) and must be given back, or the body stalls.
    return s_post_big(addr, piece=1024, pad=255)


def big(addr, settings, n, count):
    p = Peer(addr, settings=settings)
    sids = [p.request(f"/big?n={n}") for _ in range(count)]
    p.until(lambda: all(p.done(s) for s in sids))
    out = {"outcomes": [{"status": p.stream(s)["status"], "len": len(p.stream(s)["body"]),
                         "all_x": set(p.stream(s)["body"]) == {ord("x")},
                         "ended": p.stream(s)["ended"], "reset": p.stream(s)["reset"]}
                        for s in sids]}
    out.update(data_frames(p))
    return out


def s_big_small_stream_window(addr):
    # A 1,024-byte stream window, the connection window left at 65,535; h2 acknowledges as it
    # reads (a WINDOW_UPDATE once half a window is consumed).
    return big(addr, {SettingCodes.INITIAL_WINDOW_SIZE: 1024}, 1024 * 1024 + 7, 1)


def s_big_small_conn_window(addr):
    # Large stream windows, the 65,535 connection window binding across two streams.
    return big(addr, {SettingCodes.INITIAL_WINDOW_SIZE: 8 * 1024 * 1024}, 1024 * 1024, 2)


def s_big_large_frames(addr):
    # SETTINGS_MAX_FRAME_SIZE 65,536 and large windows: frames may grow, never past it.
    return big(addr, {SettingCodes.INITIAL_WINDOW_SIZE: 8 * 1024 * 1024,
                      SettingCodes.MAX_FRAME_SIZE: 65536}, 1024 * 1024, 1)


def s_window_shrink_mid_response(addr):
    # SETTINGS_INITIAL_WINDOW_SIZE lowered to 0 while a response is under way (RFC 9113
    # §6.9.2: every open stream's window shrinks, possibly below zero), then raised to 4,096:
    # h2 applies the same change to its view once our ACK comes and raises on any DATA past it.
    p = Peer(addr)
    sid = p.request("/big?n=600000")
    p.until(lambda: len(p.stream(sid)["body"]) > 0)
    acks = p.acks
    p.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
    p.flush()
    p.until(lambda: p.acks > acks)
    got = len(p.stream(sid)["body"])
    # The window is now at most 0: nothing more may come until it is raised (a PING answered
    # shows the server has read everything before it).
    p.conn.ping(b"shrunk!!")
    p.flush()
    p.until(lambda: p.pings)
    held = len(p.stream(sid)["body"]) - got
    shrunk = p.conn._get_stream_by_id(sid).inbound_flow_control_window
    acks = p.acks
    p.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 4096})
    p.flush()
    p.until(lambda: p.acks > acks)
    # The window is still what was outstanding below 4,096: granted back up to 4,096.
    window = p.conn._get_stream_by_id(sid).inbound_flow_control_window
    if window < 4096:
        p.conn.increment_flow_control_window(4096 - window, stream_id=sid)
        p.flush()
    p.until(lambda: p.done(sid))
    s = p.stream(sid)
    out = {"status": s["status"], "len": len(s["body"]), "ended": s["ended"],
           "reset": s["reset"], "window_after_shrink": shrunk, "held": held}
    out.update(data_frames(p))
    return out


def hpack_reps(block):
    """The representations of an HPACK block: [kind, index or size] each (RFC 7541 §6)."""
    out = []
    i = 0

    def integer(prefix):
        nonlocal i
        mask = (1 << prefix) - 1
        v = block[i] & mask
        i += 1
        if v == mask:
            m = 0
            while True:
                b = block[i]
                i += 1
                v += (b & 0x7F) << m
                m += 7
                if not b & 0x80:
                    break
        return v

    def skip_string():
        nonlocal i
        n = integer(7)  # moves `i` past the length first
        i += n

    while i < len(block):
        b = block[i]
        if b & 0x80:
            out.append(["indexed", integer(7)])
            continue
        if b & 0xC0 == 0x40:
            kind, idx = "incremental", integer(6)
        elif b & 0xE0 == 0x20:
            out.append(["size_update", integer(5)])
            continue
        else:
            kind, idx = ("never" if b & 0x10 else "without"), integer(4)
        if idx == 0:
            skip_string()
        skip_string()
        out.append([kind, idx])
    return out


def s_header_table_zero(addr):
    p = Peer(addr)
    first = p.get("/peer/t1")
    acks = p.acks
    p.conn.update_settings({SettingCodes.HEADER_TABLE_SIZE: 0})
    p.flush()
    p.until(lambda: p.acks > acks)
    after = [p.get(f"/peer/t{i}") for i in (2, 3, 4)]

    def reps(sid):
        return hpack_reps(b"".join(p.blocks.get(sid, [])))
    return {"first": p.outcome(first), "first_reps": reps(first),
            "after": [p.outcome(s) for s in after], "after_reps": [reps(s) for s in after]}


def s_header_table_zero_then_back(addr):
    # SETTINGS_HEADER_TABLE_SIZE 0 then 4096 before the next block: RFC 7541 §4.2 wants both
    # the smallest size and the final one signalled, or the decoder keeps entries the encoder
    # dropped and the two tables evict differently once full. Responses of distinct lengths
    # (each a new `content-length` entry) fill the table past eviction.
    p = Peer(addr)
    first = p.get("/peer/t1")
    acks = p.acks
    p.conn.update_settings({SettingCodes.HEADER_TABLE_SIZE: 0})
    p.conn.update_settings({SettingCodes.HEADER_TABLE_SIZE: 4096})
    p.flush()
    p.until(lambda: p.acks >= acks + 2)
    sids = []
    for batch in range(4):
        group = [p.request(f"/big?n={1 + batch * 50 + i}") for i in range(50)]
        p.until(lambda: all(p.done(s) for s in group))
        sids += group
    bad = [[s, p.outcome(s)["status"], len(p.stream(s)["body"])] for s, n in zip(sids, range(1, 201))
           if p.stream(s)["status"] != 200 or len(p.stream(s)["body"]) != n]
    return {"first": p.outcome(first), "responses": len(sids), "wrong": bad,
            "after_first_reps": hpack_reps(b"".join(p.blocks.get(sids[0], [])))[:3]}


def s_frames_after_close(addr):
    # WINDOW_UPDATE and RST_STREAM on a stream both sides have closed (raw: h2 would not send
    # them): RFC 9113 §5.1 lets them arrive for a while after END_STREAM; the connection goes on.
    p = Peer(addr)
    sid = p.get("/peer/closed")
    p.raw(WindowUpdateFrame(sid, window_increment=1000).serialize()
          + RstStreamFrame(sid, error_code=8).serialize())
    return {"first": p.outcome(sid), "then": p.outcome(p.get("/peer/after-close")),
            "terminated": p.terminated}


def s_ping(addr):
    p = Peer(addr)
    p.conn.ping(b"h2-peer!")
    p.flush()
    p.until(lambda: p.pings)
    return {"pings": p.pings, "then": p.outcome(p.get("/peer/after-ping"))}


def s_goaway(addr):
    # A response larger than the client's windows is in flight when the client says GOAWAY
    # (sent raw: h2 receives nothing once it has sent GOAWAY itself). The stream must complete,
    # then the server close the connection.
    p = Peer(addr)
    sid = p.request("/big?n=300000")
    p.until(lambda: p.stream(sid)["status"] is not None)
    p.raw(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize())
    p.until(lambda: p.done(sid))
    s = p.stream(sid)
    p.until(lambda: False)  # to EOF
    return {"status": s["status"], "len": len(s["body"]), "ended": s["ended"],
            "reset": s["reset"], "closed": p.closed, "server_goaway": p.terminated}


def s_trailers(addr):
    p = Peer(addr)
    sid = p.request("/echo", method="POST", end=False,
                    extra=[("content-type", "application/grpc"), ("te", "trailers")])
    msg = b"\x00\x00\x00\x00\x05hello"
    p.send_body(sid, msg)
    p.conn.send_headers(sid, [("x-checksum", "abc"), ("grpc-timeout", "5S")], end_stream=True)
    p.flush()
    p.until(lambda: p.done(sid))
    s = p.stream(sid)
    return {"status": s["status"], "reset": s["reset"], "ended": s["ended"],
            "echoed_body": s["body"].endswith(msg), "trailers": s["trailers"],
            "headers": s["headers"], "then": p.outcome(p.get("/peer/after-trailers"))}


# ---------- invalid ----------

def malformed(addr, headers):
    """A request h2 would refuse to send (outbound checks off), then a valid one."""
    p = Peer(addr, validate=False)
    sid = p.conn.get_next_available_stream_id()
    p.conn.send_headers(sid, headers, end_stream=True)
    p.flush()
    p.until(lambda: p.done(sid))
    return {"stream": sid, "bad": p.outcome(sid), "then": p.outcome(p.get("/peer/after")),
            "terminated": p.terminated}


BASE = [(":method", "GET"), (":scheme", "http"), (":path", "/peer/bad"),
        (":authority", "h2-peer.test")]


def s_uppercase_name(addr):
    return malformed(addr, BASE + [("X-Upper", "1")])


def s_connection_header(addr):
    return malformed(addr, BASE + [("connection", "keep-alive")])


def s_no_path(addr):
    return malformed(addr, [h for h in BASE if h[0] != ":path"])


def s_te_gzip(addr):
    return malformed(addr, BASE + [("te", "gzip")])


def s_bad_hpack(addr):
    # :method GET, then an index past the static table while the dynamic table is empty.
    p = Peer(addr)
    sid = p.conn.get_next_available_stream_id()
    p.raw(HeadersFrame(sid, data=b"\x82\xc6", flags={"END_HEADERS", "END_STREAM"}).serialize())
    p.until(lambda: False)
    return {"terminated": p.terminated, "closed": p.closed}


def s_data_after_end_stream(addr):
    # The request has ended (END_STREAM on HEADERS) and is parked at the origin's /hold, so the
    # stream is half-closed (remote) on the server when the DATA comes.
    p = Peer(addr)
    sid = p.request("/hold")
    p.raw(DataFrame(sid, data=b"late", flags={"END_STREAM"}).serialize())
    p.until(lambda: p.done(sid))
    rsts = [[st, k] for k, _, st, _ in p.frames if k == "RstStreamFrame"]
    return {"stream": sid, "bad": p.outcome(sid), "rst_frames": rsts,
            "then": p.outcome(p.get("/peer/after")), "terminated": p.terminated}


SCENARIOS = {name[2:]: fn for name, fn in globals().items() if name.startswith("s_")}


def main():
    if sys.argv[1] == "check":
        sys.exit(0 if h2.__version__ == "4.2.0" else 1)
    addr = sys.argv[1]
    results = {}
    for name in sys.argv[2:]:
        try:
            results[name] = SCENARIOS[name](addr)
        except Exception as e:  # noqa: BLE001 - what h2 raised is the result
            results[name] = {"error": f"{type(e).__name__}: {e}"}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
