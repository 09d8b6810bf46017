//! Synthetic answers (layer 0): every response the proxy makes itself instead of forwarding,
//! described once, independent of the wire protocol. `proxy::respond` turns a [`Synthetic`] into
//! HTTP/1.1 bytes (and, later, a gRPC Trailers-Only frame). Pure data: no I/O, no clock.
//!
//! Each variant also names the side at fault ([`Fault`]), so logs and metrics can tell a client
//! mistake from an upstream or Lightning-backend failure (pingora's habit).

/// Who caused a synthetic answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not a failure: the request is answered by policy (402, 404, OPTIONS).
    None,
    /// The client sent something wrong or too large.
    Downstream,
    /// The upstream service failed or could not be reached.
    Upstream,
    /// The Lightning bridge could not mint an invoice in time.
    Bridge,
    /// A bug or a resource limit inside the proxy.
    Internal,
}

/// A challenge to pay: the macaroon (std base64) and the BOLT11 invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The `WWW-Authenticate` field values, in order (see `l402::challenge_values`).
    pub www_authenticate: Vec<String>,
}

impl Challenge {
    /// Whether a Payment (MPP) challenge is among the values: the 402 then carries the
    /// problem+json body (Go aperture's rule, found the same way: by scheme, any position).
    pub fn offers_payment(&self) -> bool {
        self.www_authenticate
            .iter()
            .any(|v| v.len() > 8 && v.as_bytes()[..8].eq_ignore_ascii_case(b"payment "))
    }
}

/// Every answer the proxy produces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synthetic {
    /// 402 with a fresh challenge.
    PaymentRequired(Challenge),
    /// 401 for `authskipinvoicecreationpaths` without a valid credential.
    Unauthorized,
    /// 403 for a blocked peer.
    Forbidden,
    /// 404: no service matched.
    NotFound,
    /// 200 to a CORS preflight (`OPTIONS`).
    Options,
    /// 400: the request could not be parsed.
    BadRequest(&'static str),
    /// 408: the client was too slow sending its request.
    RequestTimeout,
    /// 413: the request body is over `maxbodybytes`.
    PayloadTooLarge,
    /// 429 with `Retry-After` in seconds.
    TooManyRequests { retry_after: u64 },
    /// 431: the request head is over `maxheaderbytes`.
    HeaderTooLarge,
    /// 500 with Go aperture's message for the failing step.
    Internal(&'static str),
    /// 502: the upstream could not be reached or answered garbage.
    BadGateway,
    /// 503 with `Retry-After`: the bridge is saturated or Lightning is down.
    Unavailable { retry_after: u64 },
    /// 200 answered by the proxy for a Payment session's `topUp` or `close` (never forwarded):
    /// a JSON body and its `Payment-Receipt`.
    Session(Box<SessionAnswer>),
}

/// The proxy's own answer to a session `topUp` or `close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAnswer {
    /// `{"status":"ok"}` or `{"status":"closed","refundSats":N,"refundStatus":…}`.
    pub body: String,
    /// The `Payment-Receipt` value.
    pub receipt: String,
}

impl Synthetic {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Self::PaymentRequired(_) => 402,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Options | Self::Session(_) => 200,
            Self::BadRequest(_) => 400,
            Self::RequestTimeout => 408,
            Self::PayloadTooLarge => 413,
            Self::TooManyRequests { .. } => 429,
            Self::HeaderTooLarge => 431,
            Self::Internal(_) => 500,
            Self::BadGateway => 502,
            Self::Unavailable { .. } => 503,
        }
    }

    /// The message: the HTTP body without its newline, and the gRPC `grpc-message`.
    pub fn message(&self) -> &'static str {
        match self {
            Self::PaymentRequired(_) => "payment required",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "access denied",
            Self::NotFound => "404 page not found",
            Self::Options | Self::Session(_) => "",
            Self::BadRequest(why) => why,
            Self::RequestTimeout => "request timeout",
            Self::PayloadTooLarge => "request body too large",
            Self::TooManyRequests { .. } => "rate limit exceeded",
            Self::HeaderTooLarge => "request header fields too large",
            Self::Internal(why) => why,
            Self::BadGateway => "",
            Self::Unavailable { .. } => "service unavailable",
        }
    }

    /// The gRPC status code used in the Trailers-Only form (`wire-format.md` §4): 13 for
    /// everything but rate limiting (8); 14 (UNAVAILABLE) where Go sends a bare HTTP error.
    pub fn grpc_status(&self) -> u8 {
        match self {
            Self::TooManyRequests { .. } => 8,
            Self::BadGateway | Self::Unavailable { .. } => 14,
            Self::Session(_) => 0,
            _ => 13,
        }
    }

    /// Whether Go aperture adds its CORS set to this answer (`wire-format.md` §4 table).
    pub fn cors(&self) -> bool {
        !matches!(
            self,
            Self::Internal(_)
                | Self::BadGateway
                | Self::NotFound
                | Self::BadRequest(_)
                | Self::RequestTimeout
                | Self::PayloadTooLarge
                | Self::HeaderTooLarge
        )
    }

    /// `Retry-After` seconds, when the answer carries one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::TooManyRequests { retry_after } | Self::Unavailable { retry_after } => {
                Some((*retry_after).max(1))
            }
            _ => None,
        }
    }

    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        match self {
            Self::PaymentRequired(_)
            | Self::Unauthorized
            | Self::Forbidden
            | Self::NotFound
            | Self::Options
            | Self::Session(_)
            | Self::TooManyRequests { .. } => Fault::None,
            Self::BadRequest(_)
            | Self::RequestTimeout
            | Self::PayloadTooLarge
            | Self::HeaderTooLarge => Fault::Downstream,
            Self::BadGateway => Fault::Upstream,
            Self::Unavailable { .. } => Fault::Bridge,
            Self::Internal(_) => Fault::Internal,
        }
    }

    /// The reason phrase for the status line.
    pub fn reason_phrase(&self) -> &'static str {
        reason_phrase(self.status())
    }
}

/// The canonical reason phrase of a status code (RFC 9110), as Go's `http.StatusText`.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_messages_follow_go_aperture() {
        let pr = Synthetic::PaymentRequired(Challenge {
            www_authenticate: vec![],
        });
        assert_eq!((pr.status(), pr.message()), (402, "payment required"));
        assert_eq!(Synthetic::Forbidden.message(), "access denied");
        assert_eq!(Synthetic::NotFound.message(), "404 page not found");
        let rl = Synthetic::TooManyRequests { retry_after: 0 };
        assert_eq!((rl.status(), rl.grpc_status()), (429, 8));
        assert_eq!(rl.retry_after(), Some(1), "Retry-After is at least 1");
        assert!(pr.cors() && rl.cors() && !Synthetic::BadGateway.cors());
        assert_eq!(Synthetic::BadGateway.fault(), Fault::Upstream);
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
    }
}
