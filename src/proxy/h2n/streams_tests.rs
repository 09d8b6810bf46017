use super::*;

fn limits(max_concurrent: u32) -> Limits {
    Limits {
        max_concurrent,
        max_pending_resets: 3,
        max_local_error_resets: 2,
    }
}

fn open(t: &mut Streams, id: u32, end: bool) -> Key {
    match t.recv_headers(id, end) {
        Ok(Headers::Opened(k)) => k,
        other => panic!("stream {id}: {other:?}"),
    }
}

fn conn_code(r: Result<impl std::fmt::Debug, H2Error>) -> ErrorCode {
    match r {
        Err(H2Error::Connection(c, _)) => c,
        other => panic!("want a connection error, got {other:?}"),
    }
}

#[test]
fn a_request_stream_walks_open_half_closed_closed_and_its_slot_is_reused() {
    let mut t = Streams::new(Limits::default());
    let k = open(&mut t, 1, false);
    assert_eq!(t.get(k).unwrap().state, State::Open);
    assert_eq!(t.recv_data(1, true), Ok(Some(k)));
    assert_eq!(t.get(k).unwrap().state, State::HalfClosedRemote);
    t.answered(k);
    t.send_end(k);
    assert!(t.get(k).is_none());
    assert_eq!(t.live(), 0);
    let k3 = open(&mut t, 3, true);
    assert_eq!(k3, k, "the freed slot is reused");
    assert_eq!(t.last_client(), 3);
}

#[test]
fn trailers_must_end_the_stream_and_nothing_follows_end_stream() {
    let mut t = Streams::new(Limits::default());
    let k = open(&mut t, 1, false);
    assert!(matches!(
        t.recv_headers(1, false),
        Err(H2Error::Stream(1, ErrorCode::ProtocolError, _))
    ));
    assert_eq!(t.recv_headers(1, true), Ok(Headers::Trailers(k)));
    assert!(matches!(
        t.recv_data(1, false),
        Err(H2Error::Stream(1, ErrorCode::StreamClosed, _))
    ));
    assert!(matches!(
        t.recv_headers(1, true),
        Err(H2Error::Stream(1, ErrorCode::StreamClosed, _))
    ));
}

#[test]
fn stream_id_misuse_is_a_connection_protocol_error() {
    let mut t = Streams::new(Limits::default());
    assert_eq!(conn_code(t.recv_headers(2, true)), ErrorCode::ProtocolError);
    open(&mut t, 5, true);
    assert_eq!(conn_code(t.recv_headers(3, true)), ErrorCode::ProtocolError);
    assert_eq!(conn_code(t.recv_data(7, false)), ErrorCode::ProtocolError);
    assert_eq!(conn_code(t.recv_rst(9)), ErrorCode::ProtocolError);
    assert_eq!(
        conn_code(t.recv_window_update(11, 1)),
        ErrorCode::ProtocolError
    );
    // A closed stream: DATA is a stream error, RST_STREAM and WINDOW_UPDATE are ignored.
    let k = t.find(5).unwrap();
    t.send_end(k);
    assert!(matches!(
        t.recv_data(5, false),
        Err(H2Error::Stream(5, ErrorCode::StreamClosed, _))
    ));
    assert_eq!(t.recv_rst(5), Ok(None));
    assert_eq!(t.recv_window_update(5, 10), Ok(None));
    // Reusing the closed id for a new request.
    assert_eq!(conn_code(t.recv_headers(5, true)), ErrorCode::ProtocolError);
}

#[test]
fn streams_over_the_limit_are_refused_and_after_goaway_ignored() {
    let mut t = Streams::new(limits(2));
    open(&mut t, 1, false);
    open(&mut t, 3, false);
    assert_eq!(t.recv_headers(5, false), Ok(Headers::Refused(5)));
    assert_eq!(t.live(), 2);
    // The refused id is used up.
    assert_eq!(
        conn_code(t.recv_headers(5, false)),
        ErrorCode::ProtocolError
    );
    let k1 = t.find(1).unwrap();
    t.reset(k1, false).unwrap();
    open(&mut t, 7, false);
    t.goaway(7);
    assert_eq!(t.recv_headers(9, false), Ok(Headers::Ignored));
}

#[test]
fn rapid_reset_trips_enhance_your_calm_but_answered_streams_do_not_count() {
    let mut t = Streams::new(limits(100));
    // Answered streams reset by the client: ordinary cancellation.
    for id in (1..40).step_by(2) {
        let k = open(&mut t, id, false);
        t.answered(k);
        assert!(t.recv_rst(id).is_ok());
    }
    // Unanswered ones: the fourth over the balance trips.
    let mut id = 41;
    let mut result = Ok(None);
    for _ in 0..4 {
        open(&mut t, id, false);
        result = t.recv_rst(id);
        id += 2;
    }
    assert_eq!(result, Err(CALM));
}

#[test]
fn answering_streams_pays_down_the_reset_balance() {
    let mut t = Streams::new(limits(100));
    let mut id = 1;
    for _ in 0..20 {
        // One reset before an answer, one answered stream: never over the limit.
        open(&mut t, id, false);
        assert!(t.recv_rst(id).is_ok());
        let k = open(&mut t, id + 2, true);
        t.answered(k);
        t.send_end(k);
        id += 4;
    }
}

#[test]
fn made_you_reset_trips_enhance_your_calm() {
    let mut t = Streams::new(limits(100));
    for (i, id) in [1u32, 3, 5].into_iter().enumerate() {
        let k = open(&mut t, id, false);
        let r = t.reset(k, true);
        assert_eq!(r.is_err(), i == 2, "{id}");
    }
    // Resets that were not the client's fault do not count.
    let mut t = Streams::new(limits(100));
    for id in (1..20).step_by(2) {
        let k = open(&mut t, id, false);
        t.reset(k, false).unwrap();
    }
}

#[test]
fn window_updates_and_initial_window_changes_guard_overflow() {
    let mut t = Streams::new(Limits::default());
    let k = open(&mut t, 1, false);
    assert_eq!(t.get(k).unwrap().send_window, 65_535);
    t.recv_window_update(1, 1000).unwrap();
    assert_eq!(t.get(k).unwrap().send_window, 66_535);
    // Shrinking may take a window below zero (§6.9.2).
    t.set_peer_initial_window(0).unwrap();
    assert_eq!(t.get(k).unwrap().send_window, 1000);
    t.set_peer_initial_window(65_535).unwrap();
    let k3 = open(&mut t, 3, false);
    assert_eq!(t.get(k3).unwrap().send_window, 65_535);
    assert!(matches!(
        t.recv_window_update(3, MAX_WINDOW),
        Err(H2Error::Stream(3, ErrorCode::FlowControlError, _))
    ));
    let mut t = Streams::new(Limits::default());
    open(&mut t, 1, false);
    t.recv_window_update(1, MAX_WINDOW - 65_535).unwrap();
    assert_eq!(
        conn_code(t.set_peer_initial_window(65_536)),
        ErrorCode::FlowControlError
    );
}
