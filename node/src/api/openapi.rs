//! The OpenAPI 3.0 document of the HTTP API, generated from the endpoint table
//! ([`super::endpoints::ENDPOINTS`]) and the shared `rackd-types` schemas.
//!
//! The checked-in copy is `openapi/rackd.json`; a test fails when it differs from what this
//! module generates (regenerate with `RACKD_UPDATE_OPENAPI=1 cargo test -p rackd openapi`), and
//! an integration test checks that a live node serves exactly the documented routes.

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use super::endpoints::{Auth, Media, Verb, ENDPOINTS};
use rackd_types::ErrorBody;

fn error_ref() -> Value {
    json!({"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
}

/// `503 Unavailable`: no leader or no quorum (e.g. during an election). A write was not applied
/// or its outcome is unknown; a retry with the same Idempotency-Key is applied at most once.
fn unavailable() -> Value {
    let mut v = error_ref();
    v["description"] = json!("No leader or no quorum (e.g. an election): the write was not applied or its outcome is unknown; retry after Retry-After seconds with the same Idempotency-Key");
    v["headers"] = json!({"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}});
    v
}

/// The media type of a body: raw bytes or JSON.
fn media(raw: bool) -> &'static str {
    if raw {
        "application/octet-stream"
    } else {
        "application/json"
    }
}

/// The full OpenAPI document.
pub fn document() -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let _ = g.subschema_for::<ErrorBody>();
    let mut paths = Map::new();
    for e in ENDPOINTS {
        let mut params = Vec::new();
        if e.path.contains("{id}") {
            params.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}));
        }
        if e.path.contains("{digest}") {
            params.push(json!({"name": "digest", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}}));
        }
        for (name, ty, desc) in e.query {
            params.push(json!({"name": name, "in": "query", "required": false, "description": desc, "schema": {"type": ty}}));
        }
        for h in e.headers {
            params.push(json!({"name": h.name(), "in": "header", "required": false, "description": h.description(), "schema": {"type": "string"}}));
        }
        let mut responses = Map::new();
        responses.insert(
            e.status.to_string(),
            match e.response {
                Some(r) => {
                    let r = serde_json::to_value(r(&mut g)).expect("schema serializes");
                    let mut ok = json!({"description": "OK", "content": {e.response_media.mime(): {"schema": r}}});
                    if let Some(item) = e.stream {
                        // Server-sent events: OpenAPI 3.0 has no schema for a stream, so the
                        // body is a string and the type of each message's data is named.
                        let item = serde_json::to_value(item(&mut g)).expect("schema serializes");
                        let open = g.subschema_for::<rackd_types::EventStreamOpen>();
                        let gap = g.subschema_for::<rackd_types::EventGap>();
                        let end = g.subschema_for::<ErrorBody>();
                        // Before OpenAPI 3.2 (`itemSchema`), `schema` describes one event.
                        ok["content"]["text/event-stream"] = json!({
                            "schema": {
                                "description": "One server-sent event (with follow=true). Its data is JSON of the type x-events names for its event type",
                                "type": "object",
                                "required": ["data"],
                                "properties": {
                                    "event": {"type": "string", "enum": ["message", "open", "gap", "end"]},
                                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                                    "data": {"type": "string"},
                                    "retry": {"type": "integer"},
                                },
                            },
                            "x-events": {"message": item, "open": open, "gap": gap, "end": end},
                        });
                    }
                    ok
                }
                None => json!({"description": "Done"}),
            },
        );
        if e.response_media == Media::Octets && e.verb == Verb::Get {
            // Downloads honour Range and conditional requests (RFC 9110).
            responses.insert("206".into(), json!({"description": "The requested range (Content-Range)", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}));
            responses.insert(
                "304".into(),
                json!({"description": "Not modified (If-None-Match)"}),
            );
            responses.insert(
                "412".into(),
                json!({"description": "Precondition failed (If-Match)"}),
            );
            responses.insert(
                "416".into(),
                json!({"description": "Range not satisfiable"}),
            );
        }
        if e.raw_request {
            // Uploads: too large, or no room on the receiving node.
            for (code, what) in [
                ("413", "Larger than the node accepts"),
                ("507", "No space left on the receiving node"),
            ] {
                let mut v = error_ref();
                v["description"] = json!(what);
                responses.insert(code.into(), v);
            }
        }
        if e.request.is_some() && !e.raw_request {
            let mut v = error_ref();
            v["description"] = json!("The body is over the node's limit (1 MiB)");
            responses.insert("413".into(), v);
        }
        // Every endpoint but an open read (health) goes through the cluster.
        if e.auth != Auth::Open || e.verb != Verb::Get {
            responses.insert("503".into(), unavailable());
        }
        responses.insert("default".into(), error_ref());
        let mut op = json!({
            "summary": e.summary,
            "operationId": e.operation_id(),
            "parameters": params,
            "responses": responses,
        });
        if e.auth == Auth::Open {
            op["security"] = json!([]);
        }
        if let Some(b) = e.request {
            let b = serde_json::to_value(b(&mut g)).expect("schema serializes");
            op["requestBody"] =
                json!({"required": true, "content": {media(e.raw_request): {"schema": b}}});
        }
        paths
            .entry(e.path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("object")
            .insert(e.verb.as_str().to_string(), op);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "rackd API",
            "version": "1",
            "description": "HA inventory API of a rackd cluster. Any node answers; writes are forwarded to the leader; reads are linearizable unless ?stale=true. Errors are {\"error\":{\"code\",\"message\"}}."
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": g.take_definitions(true),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/rackd.json");

    #[test]
    fn openapi_file_matches_the_server() {
        let generated = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        if std::env::var("RACKD_UPDATE_OPENAPI").is_ok() {
            std::fs::write(CHECKED_IN, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
        assert!(
            on_disk == generated,
            "openapi/rackd.json is out of date; regenerate with RACKD_UPDATE_OPENAPI=1 cargo test -p rackd openapi"
        );
    }

    #[test]
    fn every_documented_route_is_documented_once() {
        let doc = document();
        let mut n = 0;
        for (_, ops) in doc["paths"].as_object().unwrap() {
            n += ops.as_object().unwrap().len();
        }
        assert_eq!(n, ENDPOINTS.len());
    }
}
