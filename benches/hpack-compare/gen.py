"""Writes first.bin / repeat.bin: a paid request's header block as Python hpack encodes it,
the first on a connection (literals, Huffman) and the same request again (dynamic-table hits)."""
import base64
import hpack

mac = base64.b64encode(bytes(range(225))).decode()  # a ~300-byte macaroon
assert len(mac) == 300
hdrs = [(":method", "GET"), (":scheme", "http"), (":path", "/paid/resource/42?q=1"),
        (":authority", "api.example.com:8080"),
        ("authorization", "L402 " + mac + ":" + "ab" * 32),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) curl/8.5.0"), ("accept", "*/*")]
e = hpack.Encoder()
open("first.bin", "wb").write(e.encode(hdrs))
open("repeat.bin", "wb").write(e.encode(hdrs))
