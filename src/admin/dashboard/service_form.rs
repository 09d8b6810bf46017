//! The dashboard's service bodies: JSON with Go's field names (`auth_scheme` spelled as in the
//! config: `l402`, `mpp`, `l402+mpp`, or Go's enum names), turned into Go's request messages
//! and checked by the admin API's own checks ([`crate::admin::api`]: the same rules and
//! messages as gRPC and REST). Unknown fields are refused, so a typo cannot pass silently.
//!
//! One difference from Go's `UpdateService`, where `AUTH_SCHEME_L402` means "unchanged": the
//! page may set a service back to `l402` (it sends `auth_scheme` only when it changed).

use serde::Deserialize;

use crate::admin::api;
use crate::admin::backend::{AdminError, AuthScheme, ServicePatch, ServiceSpec};
use crate::admin::proto as pb;

/// What the page sends.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Form {
    #[serde(default)]
    name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    host_regexp: String,
    #[serde(default)]
    path_regexp: String,
    price: Option<i64>,
    #[serde(default)]
    auth: String,
    auth_scheme: Option<String>,
}

fn parse(body: &[u8]) -> Result<Form, AdminError> {
    let mut f: Form = serde_json::from_slice(body)
        .map_err(|e| AdminError::BadRequest(format!("invalid service body: {e}")))?;
    for s in [
        &mut f.name,
        &mut f.address,
        &mut f.protocol,
        &mut f.host_regexp,
        &mut f.path_regexp,
        &mut f.auth,
    ] {
        *s = s.trim().to_owned();
    }
    Ok(f)
}

fn scheme(s: Option<&str>) -> Result<Option<AuthScheme>, AdminError> {
    match s.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s @ ("l402" | "mpp" | "l402+mpp")) => Ok(Some(AuthScheme::from_config(s))),
        Some(s) => AuthScheme::from_proto_name(s).map(Some).ok_or_else(|| {
            AdminError::BadRequest(format!(
                "auth_scheme must be 'l402', 'mpp' or 'l402+mpp', got {s:?}"
            ))
        }),
    }
}

/// A create body, checked as Go's `CreateService`.
pub fn create(body: &[u8]) -> Result<ServiceSpec, AdminError> {
    let f = parse(body)?;
    let auth_scheme = scheme(f.auth_scheme.as_deref())?.unwrap_or_default();
    let req = pb::CreateServiceRequest {
        name: f.name,
        address: f.address,
        protocol: f.protocol,
        host_regexp: f.host_regexp,
        path_regexp: f.path_regexp,
        price: f.price.unwrap_or(0),
        auth: f.auth,
        auth_scheme: auth_scheme.number(),
    };
    api::create_spec(req, serde_json::Map::new())
}

/// An update body for the service `name`, checked as Go's `UpdateService` (empty fields stay
/// as they are); the name itself cannot change.
pub fn patch(name: &str, body: &[u8]) -> Result<ServicePatch, AdminError> {
    let f = parse(body)?;
    if !f.name.is_empty() && f.name != name {
        return Err(AdminError::BadRequest(
            "name cannot be changed (delete the service and add it again)".into(),
        ));
    }
    let auth_scheme = scheme(f.auth_scheme.as_deref())?;
    let req = pb::UpdateServiceRequest {
        name: name.to_owned(),
        address: f.address,
        protocol: f.protocol,
        host_regexp: f.host_regexp,
        path_regexp: f.path_regexp,
        price: f.price,
        auth: f.auth,
        auth_scheme: auth_scheme.map_or(0, AuthScheme::number),
    };
    let (_, mut patch) = api::update_patch(req, serde_json::Map::new())?;
    patch.auth_scheme = auth_scheme;
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(r: Result<impl std::fmt::Debug, AdminError>) -> String {
        match r {
            Err(AdminError::BadRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn create_applies_go_defaults() {
        let spec = create(br#"{"name":"a","address":"127.0.0.1:9","path_regexp":"^/b/"}"#).unwrap();
        assert_eq!(spec.protocol, "http");
        assert_eq!(spec.host_regexp, ".*");
        assert_eq!(spec.price, 0);
        assert_eq!(spec.auth, "");
        assert_eq!(spec.auth_scheme, AuthScheme::L402);
        let spec = create(
            br#"{"name":" b ","address":"x:1","path_regexp":"^/b/","price":7,
                 "auth":"Freebie 3","auth_scheme":"l402+mpp","protocol":"https"}"#,
        )
        .unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.price, spec.auth.as_str()),
            ("b", 7, "freebie 3")
        );
        assert_eq!(spec.auth_scheme, AuthScheme::L402Mpp);
        let spec = create(
            br#"{"name":"c","address":"x:1","path_regexp":"^/c/","auth_scheme":"AUTH_SCHEME_MPP"}"#,
        )
        .unwrap();
        assert_eq!(spec.auth_scheme, AuthScheme::Mpp);
    }

    #[test]
    fn create_refusals_name_the_field() {
        let cases: [(&[u8], &str); 11] = [
            (br#"{"address":"x:1","path_regexp":"^/b/"}"#, "name"),
            (br#"{"name":"a","path_regexp":"^/b/"}"#, "address"),
            (br#"{"name":"a","address":"x:1"}"#, "path_regexp"),
            (
                br#"{"name":"a","address":"x:1","path_regexp":".*"}"#,
                "reserved",
            ),
            (
                br#"{"name":"a","address":"x:1","path_regexp":"^/b("}"#,
                "path_regexp",
            ),
            (
                br#"{"name":"a","address":"x:1","path_regexp":"^/b/","host_regexp":"["}"#,
                "host_regexp",
            ),
            (
                br#"{"name":"a","address":"x:1","path_regexp":"^/b/","protocol":"ftp"}"#,
                "protocol",
            ),
            (
                br#"{"name":"a","address":"x:1","path_regexp":"^/b/","price":-1}"#,
                "price",
            ),
            (
                br#"{"name":"a","address":"x:1","path_regexp":"^/b/","auth":"freebie 0"}"#,
                "freebie",
            ),
            (
                br#"{"name":"a","address":"x:1","path_regexp":"^/b/","auth_scheme":"x"}"#,
                "auth_scheme",
            ),
            (
                br#"{"name":"a","address":"x:1","path_regexp":"^/b/","colour":"red"}"#,
                "colour",
            ),
        ];
        for (body, needle) in cases {
            let m = msg(create(body));
            assert!(m.contains(needle), "{}: {m}", String::from_utf8_lossy(body));
        }
        assert!(msg(create(b"not json")).contains("invalid service body"));
        assert!(msg(create(br#"{"price":1e99}"#)).contains("invalid service body"));
    }

    #[test]
    fn patch_leaves_empty_fields_alone_and_may_go_back_to_l402() {
        let p = patch("s", br#"{"price":25}"#).unwrap();
        assert_eq!(p.price, Some(25));
        assert_eq!(p.address, None);
        assert_eq!(p.auth_scheme, None);
        let p = patch("s", br#"{"price":0,"address":"","auth_scheme":"l402"}"#).unwrap();
        assert_eq!(p.price, Some(0));
        assert_eq!(p.address, None);
        assert_eq!(p.auth_scheme, Some(AuthScheme::L402));
        assert!(msg(patch("s", br#"{"name":"x"}"#)).contains("name cannot be changed"));
        assert!(patch("s", br#"{"name":"s"}"#).is_ok());
        assert!(msg(patch("s", br#"{"path_regexp":"/api/admin/.*"}"#)).contains("reserved"));
        assert!(msg(patch("s", br#"{"price":-5}"#)).contains("price"));
    }
}
