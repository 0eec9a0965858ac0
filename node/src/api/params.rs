//! Query parameters an endpoint does not take are refused (400, naming them and the ones it
//! does take) before anything is forwarded or read: a misspelt filter (`?locaton=dc1`) would
//! otherwise be ignored silently and answer every record. What an endpoint takes is its row
//! of the endpoint table, the same list OpenAPI documents.
//!
//! Layer: part of `api`; depends on `endpoints` only.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use rackd_types::ErrorCode;

use super::endpoints::{endpoint_for, Endpoint};
use super::error_response;

/// The first parameter of `query` that `e` does not take, decoded.
pub fn unknown_param(e: &Endpoint, query: &str) -> Option<String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| decode(p.split_once('=').map_or(p, |(k, _)| k)))
        .find(|name| !e.query.iter().any(|(n, _, _)| n == name))
}

/// `application/x-www-form-urlencoded` decoding of a name (`+` is a space, `%XX` a byte).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn known_only(req: Request, next: Next) -> Response {
    let (Some(q), Some(e)) = (
        req.uri().query(),
        endpoint_for(req.method(), req.uri().path()),
    ) else {
        return next.run(req).await;
    };
    match unknown_param(e, q) {
        None => next.run(req).await,
        Some(name) => {
            let takes: Vec<&str> = e.query.iter().map(|(n, _, _)| *n).collect();
            let takes = match takes.is_empty() {
                true => "none".to_string(),
                false => takes.join(", "),
            };
            error_response(
                ErrorCode::InvalidRequest,
                format!("unknown query parameter {name:?} (this endpoint takes: {takes})"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::endpoints::ENDPOINTS;

    /// Every endpoint takes each parameter it declares, alone or together, and refuses any
    /// other, however it is spelt on the wire.
    #[test]
    fn every_endpoint_takes_its_declared_parameters_and_no_other() {
        for e in ENDPOINTS {
            let all: Vec<String> = e.query.iter().map(|(n, _, _)| format!("{n}=1")).collect();
            for p in &all {
                assert_eq!(
                    unknown_param(e, p),
                    None,
                    "{} {}: {p}",
                    e.verb.as_str(),
                    e.path
                );
            }
            assert_eq!(unknown_param(e, &all.join("&")), None);
            assert_eq!(unknown_param(e, ""), None);
            for bad in ["bogus=1", "bogus", "locaton=dc1", "%62ogus=1", "LIMIT=5"] {
                let q = match all.first() {
                    Some(first) => format!("{first}&{bad}"),
                    None => bad.to_string(),
                };
                assert!(
                    unknown_param(e, &q).is_some(),
                    "{} {} took {q}",
                    e.verb.as_str(),
                    e.path
                );
            }
        }
    }

    #[test]
    fn names_are_form_decoded() {
        assert_eq!(decode("a%20b+c"), "a b c");
        assert_eq!(decode("%6C%69mit"), "limit");
        assert_eq!(decode("bad%zz"), "bad%zz");
        assert_eq!(decode("end%"), "end%");
        assert_eq!(decode("end%4"), "end%4");
    }
}
