//! gRPC specifics of the data path, protocol facts only: which requests are gRPC, and the
//! trailers a response must end with. Rendering of synthetic answers lives in `respond`.

use http::HeaderMap;

/// Whether a request is gRPC, from its `content-type` value: it starts with
/// `application/grpc` (`application/grpc`, `application/grpc+proto`, `application/grpc-web` …).
pub fn is_grpc(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|v| v.starts_with(b"application/grpc"))
}

/// Trailers for a gRPC response whose upstream put `grpc-status` only in its headers and sent no
/// trailers (Go aperture PR #52): clients read the status from trailers, so copy it there.
pub fn status_trailers(response_headers: &HeaderMap) -> Option<HeaderMap> {
    let status = response_headers.get("grpc-status")?;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", status.clone());
    if let Some(message) = response_headers.get("grpc-message") {
        trailers.insert("grpc-message", message.clone());
    }
    Some(trailers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_is_told_by_content_type() {
        assert!(!is_grpc(None));
        assert!(is_grpc(Some(b"application/grpc+proto")));
        assert!(!is_grpc(Some(b"application/json")));
    }

    #[test]
    fn header_status_is_copied_into_trailers() {
        let mut h = HeaderMap::new();
        assert!(status_trailers(&h).is_none());
        h.insert("grpc-status", "5".parse().unwrap());
        h.insert("grpc-message", "nope".parse().unwrap());
        let t = status_trailers(&h).unwrap();
        assert_eq!(
            (&t["grpc-status"], &t["grpc-message"]),
            (&h["grpc-status"], &h["grpc-message"])
        );
    }
}
