use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn pairs(l: &HeaderList) -> Vec<(String, String)> {
    l.iter()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn rfc7541_c4_requests_with_huffman_share_the_dynamic_table() {
    let mut d = Decoder::new(4096, 16 << 10);
    let mut out = HeaderList::default();
    d.decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"), &mut out)
        .unwrap();
    let first = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    assert_eq!(pairs(&out), p(&first));
    assert_eq!(d.table_size(), 57);
    d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf"), &mut out)
        .unwrap();
    let mut second = first.to_vec();
    second.push(("cache-control", "no-cache"));
    assert_eq!(pairs(&out), p(&second));
    assert_eq!(d.table_size(), 110);
    d.decode(
        &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        pairs(&out),
        p(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ])
    );
    assert_eq!(d.table_size(), 164);
}

#[test]
fn rfc7541_c2_literal_forms() {
    let mut d = Decoder::new(4096, 16 << 10);
    let mut out = HeaderList::default();
    // C.2.1 literal with indexing, new name.
    d.decode(
        &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
        &mut out,
    )
    .unwrap();
    assert_eq!(pairs(&out), p(&[("custom-key", "custom-header")]));
    assert_eq!(d.table_size(), 55);
    // C.2.2 literal without indexing, indexed name: the table does not change.
    d.decode(&hex("040c 2f73 616d 706c 652f 7061 7468"), &mut out)
        .unwrap();
    assert_eq!(pairs(&out), p(&[(":path", "/sample/path")]));
    assert_eq!(d.table_size(), 55);
    // C.2.3 never indexed: kept as such.
    d.decode(&hex("1008 7061 7373 776f 7264 0673 6563 7265 74"), &mut out)
        .unwrap();
    assert_eq!(pairs(&out), p(&[("password", "secret")]));
    assert!(out.fields[0].never_index);
}

#[test]
fn huffman_round_trips_every_octet_and_the_code_is_canonical() {
    let all: Vec<u8> = (0..=255).collect();
    let mut enc = Vec::new();
    huffman_encode(&all, &mut enc);
    let mut dec = Vec::new();
    huffman_decode(&enc, &mut dec).unwrap();
    assert_eq!(dec, all);
    for b in 0..=255u8 {
        let mut e = Vec::new();
        huffman_encode(&[b, b'a', b], &mut e);
        let mut d = Vec::new();
        huffman_decode(&e, &mut d).unwrap();
        assert_eq!(d, [b, b'a', b]);
    }
    assert_eq!(huffman_len(b"www.example.com"), 12);
}

#[test]
fn huffman_rejects_eos_long_padding_and_zero_padding() {
    let mut out = Vec::new();
    // EOS (30 ones) inside the data.
    assert!(huffman_decode(&[0xff, 0xff, 0xff, 0xff], &mut out).is_err());
    // 'a' (00011, 5 bits) then 11 ones of padding: more than 7 bits.
    assert!(huffman_decode(&[0b0001_1111, 0xff], &mut out).is_err());
    // 'a' then padding of zeros: not an EOS prefix (decodes as '0'-codes or fails).
    out.clear();
    let r = huffman_decode(&[0b0001_1000], &mut out);
    assert!(r.is_err() || out != b"a");
    // The valid form.
    out.clear();
    huffman_decode(&[0b0001_1111], &mut out).unwrap();
    assert_eq!(out, b"a");
}

#[test]
fn integers_round_trip_and_overflow_is_a_compression_error() {
    for (v, n) in [(10, 5), (1337, 5), (42, 8), (31, 5), (u32::MAX as usize, 7)] {
        let mut e = Vec::new();
        encode_int(v, n, 0, &mut e);
        let mut c = Cursor { buf: &e, pos: 0 };
        assert_eq!(c.int(n).unwrap(), v);
        assert_eq!(c.pos, e.len());
    }
    assert_eq!(hex("1f9a0a"), {
        let mut e = Vec::new();
        encode_int(1337, 5, 0, &mut e);
        e
    });
    let mut c = Cursor {
        buf: &hex("7f ff ff ff ff ff 01"),
        pos: 0,
    };
    assert_eq!(c.int(7), Err(HpackError::Compression("integer overflow")));
}

#[test]
fn bad_indexes_and_truncation_are_compression_errors() {
    let mut d = Decoder::new(4096, 16 << 10);
    let mut out = HeaderList::default();
    for block in ["80", "be", "4005 6162", "0f", "00 85 ab"] {
        assert!(
            matches!(
                d.decode(&hex(block), &mut out),
                Err(HpackError::Compression(_))
            ),
            "{block}"
        );
    }
}

#[test]
fn size_updates_only_first_and_within_our_setting() {
    let mut d = Decoder::new(4096, 16 << 10);
    let mut out = HeaderList::default();
    d.decode(&hex("400a 6375 7374 6f6d 2d6b 6579 0161"), &mut out)
        .unwrap();
    assert!(d.table_size() > 0);
    // Update to 0 then back: evicts everything.
    d.decode(&hex("20 3fe1 1f 82"), &mut out).unwrap();
    assert_eq!(d.table_size(), 0);
    assert_eq!(
        d.decode(&hex("82 20"), &mut out),
        Err(HpackError::Compression("table size update after a field"))
    );
    let mut over = Vec::new();
    encode_int(4097, 5, 0x20, &mut over);
    assert_eq!(
        d.decode(&over, &mut out),
        Err(HpackError::Compression("table size update over the limit"))
    );
}

#[test]
fn list_size_limit_is_a_stream_error_that_keeps_the_table_in_step() {
    let mut d = Decoder::new(4096, 100);
    let mut out = HeaderList::default();
    let mut block = Vec::new();
    let mut e = Encoder::default();
    e.field(b"x-big", &[b'v'; 80], false, &mut block);
    e.field(b"x-second", b"2", false, &mut block);
    assert_eq!(
        d.decode(&block, &mut out),
        Err(HpackError::ListTooLarge(100))
    );
    assert!(out.bytes.len() <= 100, "nothing past the limit is kept");
    // Both entries went into the table: the next block may index them.
    block.clear();
    e.field(b"x-second", b"2", false, &mut block);
    assert_eq!(block, [0x80 | 62]);
    d.decode(&block, &mut out).unwrap();
    assert_eq!(pairs(&out), p(&[("x-second", "2")]));
}

#[test]
fn malformed_fields_are_stream_errors() {
    let mut out = HeaderList::default();
    for (name, value) in [
        (&b"Upper"[..], &b"v"[..]),
        (b"sp ace", b"v"),
        (b"x", b"a\r\nb"),
        (b"x", b" lead"),
        (b"x", b"trail\t"),
        (b"x", b"nul\0"),
        (b":", b"v"),
    ] {
        let mut d = Decoder::new(4096, 16 << 10);
        let mut block = Vec::new();
        encode_int(0, 4, 0, &mut block);
        encode_string(name, &mut block);
        encode_string(value, &mut block);
        assert!(
            matches!(d.decode(&block, &mut out), Err(HpackError::Malformed(_))),
            "{name:?} {value:?}"
        );
    }
}

#[test]
fn encoder_output_decodes_and_repeats_hit_the_table() {
    let mut e = Encoder::default();
    let mut d = Decoder::new(4096, 16 << 10);
    let mut out = HeaderList::default();
    let fields: [(&[u8], &[u8]); 3] = [
        (b"content-type", b"application/grpc"),
        (b"x-custom", b"some value"),
        (
            b"www-authenticate",
            b"L402 macaroon=\"abc\", invoice=\"lnbc1\"",
        ),
    ];
    let mut first_len = 0;
    for round in 0..2 {
        let mut block = Vec::new();
        e.begin_block(&mut block);
        e.status(402, &mut block);
        for (n, v) in fields {
            e.field(n, v, false, &mut block);
        }
        e.field(b"set-cookie", b"secret", true, &mut block);
        d.decode(&block, &mut out).unwrap();
        let got = pairs(&out);
        assert_eq!(got[0], (":status".into(), "402".into()));
        assert_eq!(got.len(), 5);
        assert!(out.fields[4].never_index);
        if round == 0 {
            first_len = block.len();
        } else {
            assert!(
                block.len() < first_len / 3,
                "{} vs {first_len}",
                block.len()
            );
        }
    }
    // A smaller peer table: the next block opens with a size update.
    e.set_peer_table_size(0);
    let mut block = Vec::new();
    e.begin_block(&mut block);
    e.status(200, &mut block);
    assert_eq!(block, [0x20, 0x88]);
    d.decode(&block, &mut out).unwrap();
    assert_eq!(d.table_size(), 0);
}

#[test]
fn a_table_size_lowered_then_raised_signals_both() {
    let mut e = Encoder::default();
    let mut block = Vec::new();
    e.begin_block(&mut block);
    e.field(b"x-a", b"1", false, &mut block);
    // 0 then 4096 between two blocks: the smallest, then the final size (RFC 7541 §4.2).
    e.set_peer_table_size(0);
    e.set_peer_table_size(4096);
    let mut block = Vec::new();
    e.begin_block(&mut block);
    assert_eq!(block, [0x20, 0x3f, 0xe1, 0x1f]);
    // Lowered only, then raised only: one update each.
    e.set_peer_table_size(1024);
    let mut block = Vec::new();
    e.begin_block(&mut block);
    assert_eq!(block, [0x3f, 0xe1, 0x07]);
    e.set_peer_table_size(2048);
    let mut block = Vec::new();
    e.begin_block(&mut block);
    assert_eq!(block, [0x3f, 0xe1, 0x0f]);
}

#[test]
fn dynamic_table_compacts_and_evicts_oldest_first() {
    let mut t = DynTable::new(200);
    for i in 0..100u8 {
        t.insert(b"name", &[b'a' + i % 26; 20], true);
        assert!(t.size <= 200);
        assert!(t.data.len() <= 2 * 200 + 64, "compacted: {}", t.data.len());
    }
    assert_eq!(t.get(0).unwrap().1, [b'a' + 99 % 26; 20]);
    assert_eq!(t.entries.len(), 200 / (4 + 20 + 32));
    t.insert(b"huge", &[0; 300], true);
    assert_eq!((t.size, t.entries.len()), (0, 0));
}

#[test]
fn a_malformed_entry_stays_malformed_when_indexed_later() {
    let mut d = Decoder::new(4096, 16 << 10);
    let mut out = HeaderList::default();
    let mut block = Vec::new();
    encode_int(0, 6, 0x40, &mut block);
    encode_string(b"x-bad", &mut block);
    encode_string(b"a\nb", &mut block);
    assert!(matches!(
        d.decode(&block, &mut out),
        Err(HpackError::Malformed(_))
    ));
    assert_eq!(
        d.decode(&[0x80 | 62], &mut out),
        Err(HpackError::Malformed(BAD_ENTRY))
    );
}

#[test]
fn the_word_scan_finds_every_forbidden_byte_at_every_offset() {
    for len in 0..40 {
        assert!(!has_nul_cr_lf(&vec![b'x'; len]));
        for at in 0..len {
            for bad in [0u8, b'\r', b'\n'] {
                let mut v = vec![0xffu8; len];
                v[at] = bad;
                assert!(has_nul_cr_lf(&v), "{len} {at} {bad}");
            }
        }
    }
    assert!(!has_nul_cr_lf(&[
        0x0b, 0x0c, 0x0e, 0x01, 0x80, 0x8a, 0x8d, 0x7f, 0x09
    ]));
}

/// A fixed-seed sweep of random and mutated blocks (the fuzz target `h2n_recv` goes further):
/// no panic, and what is kept respects the list limit.
#[test]
fn random_and_mutated_blocks_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut valid = Vec::new();
    let mut e = Encoder::default();
    e.field(b"authorization", &[b'm'; 300], false, &mut valid);
    e.field(b"x-a", b"b", false, &mut valid);
    let mut out = HeaderList::default();
    for round in 0..20_000 {
        let mut d = Decoder::new(256, 512);
        let block: Vec<u8> = if round % 2 == 0 {
            (0..next() % 64).map(|_| next() as u8).collect()
        } else {
            let mut b = valid.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            b
        };
        let _ = d.decode(&block, &mut out);
        let kept: usize = out
            .fields
            .iter()
            .map(|f| f.name.len() + f.value.len() + 32)
            .sum();
        assert!(kept <= 512, "kept {kept} bytes of fields over the limit");
        let _ = d.decode(&block, &mut out);
    }
}

#[test]
fn a_repeated_long_literal_decodes_the_same_and_a_changed_one_differently() {
    // Never-indexed literals (as clients send credentials) go through the decoder's memo.
    let block = |value: &[u8]| {
        let mut e = Encoder::default();
        let mut b = Vec::new();
        e.field(b"authorization", value, true, &mut b);
        b
    };
    let a = b"L402 AgELbG9jYWxob3N0OjgwODECQgAAmacaroonmacaroonmacaroonmacaroon:0123456789abcdef";
    let mut b = *a;
    b[40] = b'X'; // same length, one byte differs
    let mut d = Decoder::new(4096, 64 << 10);
    let mut out = HeaderList::default();
    for (value, round) in [(&a[..], 0), (&a[..], 1), (&b[..], 2), (&a[..], 3)] {
        d.decode(&block(value), &mut out).expect("decodes");
        assert_eq!(out.get(b"authorization"), Some(value), "round {round}");
    }
}

#[test]
fn a_repeated_malformed_long_literal_is_refused_every_time() {
    let mut e = Encoder::default();
    let mut d = Decoder::new(4096, 64 << 10);
    let mut out = HeaderList::default();
    let bad = b"L402 AgELbG9jYWxob3N0OjgwODECQgAAmacaroonmacaroonmacaroonmacaroon:0123 ";
    for round in 0..2 {
        let mut block = Vec::new();
        e.field(b"authorization", bad, true, &mut block);
        let r = d.decode(&block, &mut out);
        assert!(
            matches!(r, Err(HpackError::Malformed(_))),
            "round {round}: {r:?}"
        );
        // Same value under a bad name: the name is still checked on a memo hit.
        let mut block = Vec::new();
        e.field(b"x-ok", b"fine", true, &mut block);
        d.decode(&block, &mut out).expect("decodes");
    }
}

#[test]
fn blocks_that_repeat_their_fields_by_position_still_decode_right() {
    // The encoder checks each field against the entry the same position used last block; mix
    // repeats, changed values, reorderings, evictions and table size changes, and decode all.
    let mut e = Encoder::default();
    let mut d = Decoder::new(4096, 64 << 10);
    let mut out = HeaderList::default();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let names = [
        "content-type",
        "date",
        "server",
        "x-a",
        "access-control-allow-origin",
    ];
    for round in 0..400 {
        if round % 97 == 50 {
            let size = [0usize, 256, 4096][(next() % 3) as usize];
            e.set_peer_table_size(size);
            // The decoder learns the size from the block's update; allow up to 4096.
        }
        let mut fields = Vec::new();
        for (k, name) in names.iter().enumerate() {
            let r = next() % 10;
            let value = match r {
                0..=5 => format!("v{k}"),
                6..=7 => format!("v{k}-{}", next() % 4),
                _ => "x".repeat((next() % 700) as usize + 1),
            };
            fields.push((name.to_string(), value));
        }
        if next() % 5 == 0 {
            fields.swap(0, 2);
        }
        let mut block = Vec::new();
        e.begin_block(&mut block);
        for (n, v) in &fields {
            e.field(n.as_bytes(), v.as_bytes(), false, &mut block);
        }
        d.decode(&block, &mut out).expect("decodes");
        let got: Vec<(String, String)> = out
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect();
        assert_eq!(got, fields, "round {round}");
    }
}

#[test]
fn any_case_names_are_sent_lowercase_and_repeat_from_the_table() {
    let mut e = Encoder::default();
    let mut d = Decoder::new(4096, 64 << 10);
    let mut out = HeaderList::default();
    for (round, name) in [
        "Content-Type",
        "content-type",
        "CONTENT-TYPE",
        "Content-Type",
    ]
    .iter()
    .enumerate()
    {
        let mut block = Vec::new();
        e.begin_block(&mut block);
        e.field_any_case(name.as_bytes(), b"text/plain", &mut block);
        e.field_any_case(b"X-Up", b"1", &mut block);
        d.decode(&block, &mut out).expect("decodes");
        assert_eq!(
            out.get(b"content-type"),
            Some(&b"text/plain"[..]),
            "round {round}"
        );
        assert_eq!(out.get(b"x-up"), Some(&b"1"[..]), "round {round}");
        if round > 0 {
            assert_eq!(block.len(), 2, "round {round}: both fields indexed");
        }
    }
}
