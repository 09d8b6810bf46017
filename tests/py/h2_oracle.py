"""The Python `h2` stack (hyperframe, hpack, h2 4.2.0) as a conformance peer for the native
HTTP/2 codec (src/proxy/h2n; driven by tests/it/h2n_conformance.rs). JSON on stdin and stdout.

  check                     exit 0 when h2 4.2.0 is importable
  frames                    frames hyperframe writes, with what they mean
  parse-frames  [hex,...]   what hyperframe reads in our frames
  hpack-encode              header blocks Python hpack writes (one encoder), with their lists
  hpack-decode  [hex,...]   the header lists Python hpack reads from our blocks (one decoder)
  peer-errors   [hex,...]   the GOAWAY/RST_STREAM code a Python h2 server answers each
                            frame with, after a valid preface and SETTINGS
"""
import json
import sys

from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, PriorityFrame, PushPromiseFrame, RstStreamFrame,
                              SettingsFrame, WindowUpdateFrame)


def describe(f):
    """The meaning of a frame, in the same shape the Rust side builds from its own views."""
    d = {"type": f.type, "stream": f.stream_id}
    fl = f.flags
    if isinstance(f, DataFrame):
        d.update(data=bytes(f.data).hex(), end_stream="END_STREAM" in fl,
                 flow_len=f.flow_controlled_length)
    elif isinstance(f, HeadersFrame):
        d.update(block=bytes(f.data).hex(), end_stream="END_STREAM" in fl,
                 end_headers="END_HEADERS" in fl,
                 priority=[f.exclusive, f.depends_on, f.stream_weight]
                 if "PRIORITY" in fl else None)
    elif isinstance(f, PriorityFrame):
        d.update(priority=[f.exclusive, f.depends_on, f.stream_weight])
    elif isinstance(f, RstStreamFrame):
        d.update(code=f.error_code)
    elif isinstance(f, SettingsFrame):
        d.update(ack="ACK" in fl, params=[[k, v] for k, v in f.settings.items()])
    elif isinstance(f, PushPromiseFrame):
        d.update(promised=f.promised_stream_id, block=bytes(f.data).hex(),
                 end_headers="END_HEADERS" in fl)
    elif isinstance(f, PingFrame):
        d.update(ack="ACK" in fl, data=bytes(f.opaque_data).hex())
    elif isinstance(f, GoAwayFrame):
        d.update(last_stream=f.last_stream_id, code=f.error_code,
                 debug=bytes(f.additional_data).hex())
    elif isinstance(f, WindowUpdateFrame):
        d.update(increment=f.window_increment)
    elif isinstance(f, ContinuationFrame):
        d.update(block=bytes(f.data).hex(), end_headers="END_HEADERS" in fl)
    return d


def frames():
    pri = dict(depends_on=3, stream_weight=200, exclusive=True)
    cases = [
        DataFrame(1, data=b"hello", flags={"END_STREAM"}),
        DataFrame(3, data=b"padded", flags={"PADDED"}, pad_length=10),
        DataFrame(5, data=b""),
        HeadersFrame(1, data=b"\x82\x86\x84", flags={"END_HEADERS", "END_STREAM"}),
        HeadersFrame(7, data=b"blk", flags={"PRIORITY", "PADDED"}, pad_length=4, **pri),
        PriorityFrame(9, **pri),
        RstStreamFrame(11, error_code=8),
        SettingsFrame(0, settings={1: 0, 3: 100, 4: 65535, 5: 16384, 6: 8192, 8: 1}),
        SettingsFrame(0, flags={"ACK"}),
        PushPromiseFrame(1, promised_stream_id=2, data=b"pp", flags={"END_HEADERS"}),
        PushPromiseFrame(1, promised_stream_id=4, data=b"pp", flags={"PADDED"}, pad_length=3),
        PingFrame(0, opaque_data=b"\x01\x02\x03\x04\x05\x06\x07\x08", flags={"ACK"}),
        GoAwayFrame(0, last_stream_id=13, error_code=11, additional_data=b"calm down"),
        WindowUpdateFrame(0, window_increment=2**31 - 1),
        WindowUpdateFrame(15, window_increment=1),
        ContinuationFrame(1, data=b"more", flags={"END_HEADERS"}),
    ]
    return [{"hex": f.serialize().hex(), "expect": describe(f)} for f in cases]


def parse_frames(hexes):
    out = []
    for h in hexes:
        data = memoryview(bytes.fromhex(h))
        f, length = Frame.parse_frame_header(data[:9])
        f.parse_body(data[9:9 + length])
        out.append(describe(f))
    return out


def hpack_encode():
    from hpack import Encoder
    from hpack.struct import HeaderTuple, NeverIndexedHeaderTuple
    mac = "AgEEbHNhdAJCAAB" + "x" * 280
    paid = [(":method", "GET"), (":scheme", "http"), (":path", "/paid/resource?q=1"),
            (":authority", "api.example.com"), ("authorization", "L402 " + mac + ":" + "ab" * 32),
            ("user-agent", "python-h2/4.2.0"), ("accept", "*/*")]
    e = Encoder()
    blocks = []

    def add(headers, huffman=True):
        blocks.append({"hex": e.encode(headers, huffman=huffman).hex(),
                       "expect": [[str(n), str(v)] for n, v in headers]})
    add(paid)
    add(paid)  # all dynamic-table hits
    add(paid, huffman=False)
    add([(":method", "POST"), (":path", "/x"), HeaderTuple("x-not-indexed", "1"),
         NeverIndexedHeaderTuple("cookie", "secret=1"), ("content-type", "application/grpc"),
         ("te", "trailers")])
    e.header_table_size = 256  # emits a size update at the start of the next block
    add([(":method", "GET"), (":path", "/after-resize"), ("x-long", "v" * 300)])
    add([(":method", "GET"), (":path", "/after-resize"), ("x-long", "v" * 300)])
    return blocks


def hpack_decode(hexes):
    from hpack import Decoder
    d = Decoder()
    out = []
    for h in hexes:
        out.append([[n.decode("latin-1"), v.decode("latin-1")]
                    for n, v in d.decode(bytes.fromhex(h), raw=True)])
    return out


def peer_errors(hexes):
    import h2.config
    import h2.connection
    import h2.exceptions
    from hyperframe.frame import Frame as F
    results = []
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize()
    for h in hexes:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        conn.receive_data(preface)
        conn.data_to_send()
        result = {"scope": "none", "code": None}
        try:
            conn.receive_data(bytes.fromhex(h))
        except h2.exceptions.ProtocolError as exc:
            code = int(getattr(exc, "error_code", 1))
            conn.close_connection(error_code=code)
            result = {"scope": "connection", "code": code, "why": type(exc).__name__}
        sent = memoryview(conn.data_to_send())
        while len(sent) >= 9 and result["scope"] == "none":
            f, length = F.parse_frame_header(sent[:9])
            f.parse_body(sent[9:9 + length])
            sent = sent[9 + length:]
            if isinstance(f, GoAwayFrame):
                result = {"scope": "connection", "code": f.error_code}
            elif isinstance(f, RstStreamFrame):
                result = {"scope": "stream", "code": f.error_code, "stream": f.stream_id}
        results.append(result)
    return results


def main():
    cmd = sys.argv[1]
    if cmd == "check":
        import h2
        sys.exit(0 if h2.__version__ == "4.2.0" else 1)
    arg = json.load(sys.stdin) if cmd in ("parse-frames", "hpack-decode", "peer-errors") else None
    fn = {"frames": frames, "parse-frames": parse_frames, "hpack-encode": hpack_encode,
          "hpack-decode": hpack_decode, "peer-errors": peer_errors}[cmd]
    json.dump(fn(arg) if arg is not None else fn(), sys.stdout)


if __name__ == "__main__":
    main()
