//! gRPC through the proxy with a real tonic client and a real tonic upstream (the echo service of
//! `tests/proto/echo.proto`), both on a tokio runtime in this process; the proxy runs on its own
//! monoio threads and reaches the upstream over h2c (`protocol: h2c`), the client reaches the
//! proxy over h2c with prior knowledge (`insecure: true`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::echo_proto::echo_client::EchoClient;
use crate::echo_proto::echo_server::{Echo, EchoServer};
use crate::echo_proto::{CountReq, Msg};
use crate::support::{pay, reload_routes, Proxy};

/// Every test gives up after this long instead of hanging.
const DEADLINE: Duration = Duration::from_secs(60);

pub(crate) type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

/// The upstream (the tonic tests' and the grpcio tests'): counts the calls that reach it.
#[derive(Clone, Default)]
pub(crate) struct EchoService {
    pub(crate) calls: Arc<AtomicUsize>,
}

/// A `Count` of this many messages ends with DATA_LOSS and [`detail_metadata`] in real
/// trailers instead of OK.
pub(crate) const FAILING_COUNT: u64 = 3;

/// The custom metadata of the upstream's failures (ASCII and binary): it must pass through.
fn detail_metadata() -> tonic::metadata::MetadataMap {
    let mut meta = tonic::metadata::MetadataMap::new();
    meta.insert("x-detail", MetadataValue::from_static("why"));
    meta.insert_bin("x-raw-bin", MetadataValue::from_bytes(&[0, 1, 0xfe, 0xff]));
    meta
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn say(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let msg = req.into_inner();
        Ok(Response::new(Msg {
            text: format!("echo: {}", msg.text),
            seq: msg.seq,
        }))
    }

    type CountStream = MsgStream;

    async fn count(&self, req: Request<CountReq>) -> Result<Response<MsgStream>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let n = req.into_inner().n;
        let messages = tokio_stream::iter((0..n).map(|seq| {
            Ok(Msg {
                text: format!("message {seq}"),
                seq,
            })
        }));
        let end = (n == FAILING_COUNT).then(|| {
            Err(Status::with_metadata(
                Code::DataLoss,
                "lost after three",
                detail_metadata(),
            ))
        });
        Ok(Response::new(Box::pin(
            messages.chain(tokio_stream::iter(end)),
        )))
    }

    async fn fail(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // Custom metadata rides in the (Trailers-Only) status headers; it must pass too.
        Err(Status::with_metadata(
            Code::NotFound,
            req.into_inner().text,
            detail_metadata(),
        ))
    }

    async fn join(&self, req: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut input = req.into_inner();
        let mut parts = Vec::new();
        while let Some(msg) = input.next().await {
            parts.push(msg?.text);
        }
        Ok(Response::new(Msg {
            text: parts.join("+"),
            seq: parts.len() as u64,
        }))
    }

    type ChatStream = MsgStream;

    async fn chat(&self, req: Request<Streaming<Msg>>) -> Result<Response<MsgStream>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let out = req.into_inner().map(|msg| {
            msg.map(|m| Msg {
                text: m.text.to_uppercase(),
                seq: m.seq,
            })
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// The proxy in front of a tonic upstream, and a tonic client connected to the proxy.
struct Setup {
    proxy: Proxy,
    upstream: EchoService,
    upstream_addr: SocketAddr,
    client: EchoClient<Channel>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn setup() -> Setup {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let upstream = EchoService::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder().serve_with_incoming_shutdown(
        EchoServer::new(upstream.clone()),
        TcpListenerStream::new(listener),
        async {
            let _ = stopped.await;
        },
    );
    tokio::spawn(server);
    let services = h2c_service(upstream_addr);
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&services, 2))
        .await
        .unwrap();
    let channel = Endpoint::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .expect("tonic connects to the proxy");
    Setup {
        proxy,
        upstream,
        upstream_addr,
        client: EchoClient::new(channel),
        _stop: stop,
    }
}

fn h2c_service(upstream: SocketAddr) -> String {
    format!(
        "  - name: \"echo\"\n    hostregexp: \".*\"\n    pathregexp: \"^/aperture.test.Echo/.*$\"\n    \
         address: \"{upstream}\"\n    protocol: h2c\n    price: 10\n"
    )
}

/// The macaroon and invoice of the L402 challenge in a tonic status's metadata; checks that both
/// challenges are there, LSAT first.
fn challenge_of(status: &Status) -> (String, String) {
    let values: Vec<String> = status
        .metadata()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().expect("ascii challenge").to_string())
        .collect();
    assert_eq!(values.len(), 2, "LSAT and L402 challenges: {values:?}");
    assert!(values[0].starts_with("LSAT macaroon=\""), "{values:?}");
    assert!(values[1].starts_with("L402 macaroon=\""), "{values:?}");
    let field = &values[1];
    let grab = |key: &str| {
        let start = field.find(&format!("{key}=\"")).expect(key) + key.len() + 2;
        let end = start + field[start..].find('"').expect("closing quote");
        field[start..end].to_string()
    };
    (grab("macaroon"), grab("invoice"))
}

/// Pays the invoice at the dev wallet and returns the `macaroon` metadata the way Loop's Go
/// client sends it: hex of the binary macaroon with a `preimage=<hex>` first-party caveat.
async fn loop_macaroon(wallet: SocketAddr, mac: &str, invoice: String) -> String {
    let preimage = tokio::task::spawn_blocking(move || pay(wallet, &invoice))
        .await
        .unwrap();
    let mut m = aperture::l402::macaroon_from_base64(mac).expect("challenge macaroon");
    m.add_first_party_caveat(format!("preimage={preimage}"));
    hex::encode(m.encode_v2())
}

/// An unpaid call, the payment, and the `macaroon` metadata of the paid token.
async fn buy(s: &mut Setup) -> String {
    let status = s
        .client
        .say(Msg::default())
        .await
        .expect_err("unpaid call fails");
    let (mac, invoice) = challenge_of(&status);
    loop_macaroon(s.proxy.wallet, &mac, invoice).await
}

/// Bidi in lockstep: each `ping N` must come back as `PING N` before the next is sent, so
/// nothing on the way may buffer a whole direction.
async fn lockstep(
    tx: &tokio::sync::mpsc::Sender<Msg>,
    replies: &mut Streaming<Msg>,
    seqs: std::ops::Range<u64>,
) {
    for seq in seqs {
        let text = format!("ping {seq}");
        tx.send(Msg { text, seq }).await.unwrap();
        let reply = replies.message().await.expect("reply").expect("a reply");
        let want = Msg {
            text: format!("PING {seq}"),
            seq,
        };
        assert_eq!(reply, want);
    }
}

fn with_macaroon<T>(msg: T, macaroon: &str) -> Request<T> {
    let mut req = Request::new(msg);
    let value: MetadataValue<_> = macaroon.parse().expect("hex is ascii");
    req.metadata_mut().insert("macaroon", value);
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_call_is_internal_payment_required_then_loop_style_macaroon_pays() {
    tokio::time::timeout(DEADLINE, async {
        let mut s = setup().await;
        let status = s
            .client
            .say(Msg {
                text: "hi".into(),
                seq: 1,
            })
            .await
            .expect_err("unpaid call fails");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert_eq!(status.message(), "payment required");
        assert_eq!(
            s.upstream.calls.load(Ordering::SeqCst),
            0,
            "never forwarded"
        );
        let (mac, invoice) = challenge_of(&status);
        let macaroon = loop_macaroon(s.proxy.wallet, &mac, invoice).await;
        let msg = Msg {
            text: "hi".into(),
            seq: 7,
        };
        let answer = s
            .client
            .say(with_macaroon(msg, &macaroon))
            .await
            .expect("paid call answers")
            .into_inner();
        assert_eq!(
            answer,
            Msg {
                text: "echo: hi".into(),
                seq: 7
            }
        );
        assert_eq!(s.upstream.calls.load(Ordering::SeqCst), 1);
        // A macaroon whose preimage caveat is wrong is refused like a missing one.
        let mut forged = aperture::l402::macaroon_from_base64(&mac).unwrap();
        forged.add_first_party_caveat(format!("preimage={}", "00".repeat(32)));
        let bad = hex::encode(forged.encode_v2());
        let status = s
            .client
            .say(with_macaroon(Msg::default(), &bad))
            .await
            .expect_err("wrong preimage");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert_eq!(s.upstream.calls.load(Ordering::SeqCst), 1);
    })
    .await
    .expect("within the deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_of_a_thousand_messages_arrives_in_order() {
    tokio::time::timeout(DEADLINE, async {
        let mut s = setup().await;
        let macaroon = buy(&mut s).await;
        let mut stream = s
            .client
            .count(with_macaroon(CountReq { n: 1000 }, &macaroon))
            .await
            .expect("paid stream starts")
            .into_inner();
        let mut seen = 0u64;
        while let Some(msg) = stream.message().await.expect("stream message") {
            assert_eq!(msg.seq, seen, "in order");
            assert_eq!(msg.text, format!("message {seen}"));
            seen += 1;
        }
        assert_eq!(seen, 1000);
    })
    .await
    .expect("within the deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_status_passes_through_unchanged() {
    tokio::time::timeout(DEADLINE, async {
        let mut s = setup().await;
        let macaroon = buy(&mut s).await;
        let msg = Msg {
            text: "nope".into(),
            seq: 0,
        };
        let status = s
            .client
            .fail(with_macaroon(msg, &macaroon))
            .await
            .expect_err("upstream fails the call");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(status.message(), "nope");
        assert_eq!(
            status.metadata().get("x-detail").map(|v| v.to_str().ok()),
            Some(Some("why"))
        );
        assert_eq!(s.upstream.calls.load(Ordering::SeqCst), 1);
    })
    .await
    .expect("within the deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming_and_bidi_calls_stream_both_ways() {
    tokio::time::timeout(DEADLINE, async {
        let mut s = setup().await;
        let macaroon = buy(&mut s).await;
        let parts = (0..50).map(|i| Msg {
            text: format!("p{i}"),
            seq: i,
        });
        let joined = s
            .client
            .join(with_macaroon(tokio_stream::iter(parts), &macaroon))
            .await
            .expect("client streaming")
            .into_inner();
        let want: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
        assert_eq!(joined.text, want.join("+"));
        assert_eq!(joined.seq, 50);

        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut replies = s
            .client
            .chat(with_macaroon(ReceiverStream::new(rx), &macaroon))
            .await
            .expect("bidi starts")
            .into_inner();
        lockstep(&tx, &mut replies, 0..20).await;
        drop(tx);
        assert!(replies.message().await.expect("clean end").is_none());
    })
    .await
    .expect("within the deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_mebibyte_message_crosses_both_ways() {
    tokio::time::timeout(DEADLINE, async {
        let mut s = setup().await;
        let macaroon = buy(&mut s).await;
        // Larger than every h2 window on the way (1 MiB stream, 4 MiB connection), so flow
        // control must be released in both directions.
        let text: String = (0..3 * 1024 * 1024)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let msg = Msg {
            text: text.clone(),
            seq: 3,
        };
        let answer = s
            .client
            .say(with_macaroon(msg, &macaroon))
            .await
            .expect("big unary call")
            .into_inner();
        assert_eq!(answer.seq, 3);
        assert!(answer.text == format!("echo: {text}"), "body intact");
    })
    .await
    .expect("within the deadline");
}

/// Hot reload while a bidi stream is open: the stream keeps flowing on the snapshot it started
/// with, and a new call on the same connection (the same core) already sees the new price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidi_stream_survives_a_reload_that_changes_the_price() {
    tokio::time::timeout(DEADLINE, async {
        let mut s = setup().await;
        let macaroon = buy(&mut s).await;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut replies = s
            .client
            .chat(with_macaroon(ReceiverStream::new(rx), &macaroon))
            .await
            .expect("bidi starts")
            .into_inner();
        lockstep(&tx, &mut replies, 0..5).await;

        let services = h2c_service(s.upstream_addr).replace("price: 10", "price: 20");
        let routes = Arc::new(reload_routes(&services));
        s.proxy
            .server()
            .broadcast(|| aperture::runtime::Control::Routes(routes.clone()));

        // A new unpaid call on the same connection is challenged at the new price...
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = s.client.say(Msg::default()).await.expect_err("unpaid");
            if challenge_of(&status).1.starts_with("lnbcrt200n1") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the new price never applied"
            );
        }
        // ...while the stream opened before the reload keeps answering.
        lockstep(&tx, &mut replies, 5..10).await;
        drop(tx);
        assert!(replies.message().await.expect("clean end").is_none());
    })
    .await
    .expect("within the deadline");
}
