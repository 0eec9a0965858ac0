//! The OpenAPI 3.0 document of the HTTP API, generated from the route table
//! ([`super::routes::ROUTES`]) and the shared `rackd-types` schemas.
//!
//! The checked-in copy is `openapi/rackd.json`; a test fails when it differs from what this
//! module generates (regenerate with `RACKD_UPDATE_OPENAPI=1 cargo test -p rackd openapi`), and
//! another test checks that the router serves exactly the routes in the table.

use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use rackd_types::*;

struct Doc {
    summary: &'static str,
    open: bool,
    body: Option<Value>,
    status: &'static str,
    response: Option<Value>,
    query: &'static [(&'static str, &'static str, &'static str)],
    headers: &'static [&'static str],
}

const LIST_Q: &[(&str, &str, &str)] = &[
    (
        "cursor",
        "string",
        "Opaque cursor from the previous page's next_cursor",
    ),
    ("limit", "integer", "Page size, 1..=1000 (default 100)"),
    (
        "stale",
        "boolean",
        "Serve from the local replica without a ReadIndex round trip",
    ),
];
const MACHINE_Q: &[(&str, &str, &str)] = &[
    (
        "cursor",
        "string",
        "Opaque cursor from the previous page's next_cursor",
    ),
    ("limit", "integer", "Page size, 1..=1000 (default 100)"),
    (
        "stale",
        "boolean",
        "Serve from the local replica without a ReadIndex round trip",
    ),
    ("location", "string", "Only machines of this location"),
    ("state", "string", "Only machines in this lifecycle state"),
    ("rack", "integer", "Only machines in this rack"),
];
const LOC_Q: &[(&str, &str, &str)] = &[
    (
        "cursor",
        "string",
        "Opaque cursor from the previous page's next_cursor",
    ),
    ("limit", "integer", "Page size, 1..=1000 (default 100)"),
    (
        "stale",
        "boolean",
        "Serve from the local replica without a ReadIndex round trip",
    ),
    ("location", "string", "Only entries of this location"),
];
const STALE_Q: &[(&str, &str, &str)] = &[("stale", "boolean", "Serve from the local replica")];
const EVENT_Q: &[(&str, &str, &str)] = &[
    (
        "after",
        "integer",
        "Only events with a sequence number greater than this",
    ),
    ("limit", "integer", "Page size, 1..=1000 (default 100)"),
    ("stale", "boolean", "Serve from the local replica"),
];
const IDEM: &[&str] = &["Idempotency-Key"];
const IFM: &[&str] = &["If-Match", "Idempotency-Key"];

fn doc(g: &mut SchemaGenerator, method: &str, path: &str) -> Doc {
    let s = |v: Value| Some(v);
    macro_rules! sch {
        ($t:ty) => {
            serde_json::to_value(g.subschema_for::<$t>()).expect("schema serializes")
        };
    }
    let d = |summary, body, status, response, query, headers| Doc {
        summary,
        open: false,
        body,
        status,
        response,
        query,
        headers,
    };
    match (method, path) {
        ("get", "/v1/health") => Doc {
            open: true,
            ..d("Node health and Raft state (no auth)", None, "200", s(sch!(Health)), &[], &[])
        },
        ("get", "/v1/cluster") => d("Members, leader, term, commit index", None, "200", s(sch!(ClusterInfo)), STALE_Q, &[]),
        ("post", "/v1/cluster/join") => Doc {
            open: true,
            ..d(
                "Join: phase 1 allocates a node id, phase 2 (node_id set) adds the node (auth: join token)",
                s(sch!(JoinRequest)),
                "200",
                s(sch!(JoinResponse)),
                &[],
                &[],
            )
        },
        ("delete", "/v1/cluster/members/{id}") => d("Remove a member (voter or learner)", None, "204", None, &[], &[]),
        ("get", "/v1/events") => d("Journal of changes", None, "200", s(sch!(Page<Event>)), EVENT_Q, &[]),
        ("get", "/v1/tokens/join") => d("List join tokens (no secrets)", None, "200", s(sch!(Page<JoinTokenView>)), LIST_Q, &[]),
        ("post", "/v1/tokens/join") => d(
            "Create a one-time join token",
            s(sch!(CreateJoinToken)),
            "201",
            s(sch!(CreatedJoinToken)),
            &[],
            &[],
        ),
        ("get", "/v1/tokens/api") => d("List API tokens (no secrets)", None, "200", s(sch!(Page<ApiTokenView>)), LIST_Q, &[]),
        ("post", "/v1/tokens/api") => d(
            "Create an API token",
            s(sch!(CreateApiToken)),
            "201",
            s(sch!(CreatedApiToken)),
            &[],
            &[],
        ),
        ("get", "/v1/locations") => d("List locations", None, "200", s(sch!(Page<Location>)), LIST_Q, &[]),
        ("post", "/v1/locations") => d("Create a location", s(sch!(CreateLocation)), "201", s(sch!(Location)), &[], IDEM),
        ("get", "/v1/locations/{id}") => d("Get a location", None, "200", s(sch!(Location)), STALE_Q, &[]),
        ("patch", "/v1/locations/{id}") => d("Update a location", s(sch!(UpdateLocation)), "200", s(sch!(Location)), &[], IFM),
        ("delete", "/v1/locations/{id}") => d("Delete an unused location", None, "204", None, &[], IFM),
        ("get", "/v1/racks") => d("List racks", None, "200", s(sch!(Page<Rack>)), LOC_Q, &[]),
        ("post", "/v1/racks") => d("Create a rack", s(sch!(CreateRack)), "201", s(sch!(Rack)), &[], IDEM),
        ("get", "/v1/racks/{id}") => d("Get a rack", None, "200", s(sch!(Rack)), STALE_Q, &[]),
        ("patch", "/v1/racks/{id}") => d("Update a rack", s(sch!(UpdateRack)), "200", s(sch!(Rack)), &[], IFM),
        ("delete", "/v1/racks/{id}") => d("Delete an empty rack", None, "204", None, &[], IFM),
        ("get", "/v1/machines") => d("List machines", None, "200", s(sch!(Page<Machine>)), MACHINE_Q, &[]),
        ("post", "/v1/machines") => d("Create a machine", s(sch!(CreateMachine)), "201", s(sch!(Machine)), &[], IDEM),
        ("get", "/v1/machines/{id}") => d("Get a machine", None, "200", s(sch!(Machine)), STALE_Q, &[]),
        ("patch", "/v1/machines/{id}") => d("Update a machine", s(sch!(UpdateMachine)), "200", s(sch!(Machine)), &[], IFM),
        ("delete", "/v1/machines/{id}") => d("Delete a machine", None, "204", None, &[], IFM),
        ("post", "/v1/machines/{id}/deploy") => d(
            "Deploy an image on a ready machine (ready -> deploying; one-time install token)",
            s(sch!(DeployMachine)),
            "200",
            s(sch!(Machine)),
            &[],
            IFM,
        ),
        ("post", "/v1/machines/{id}/power") => d(
            "Power action (on, off, cycle, reset, status) as a task run at the machine's location",
            s(sch!(PowerRequest)),
            "202",
            s(sch!(Task)),
            &[],
            IDEM,
        ),
        ("post", "/v1/machines/{id}/boot-device") => d(
            "Set the boot device (pxe or disk, next boot or persistent) as a task run at the machine's location",
            s(sch!(BootDeviceRequest)),
            "202",
            s(sch!(Task)),
            &[],
            IDEM,
        ),
        ("get", "/v1/tasks") => d("List tasks", None, "200", s(sch!(Page<Task>)), LIST_Q, &[]),
        ("get", "/v1/tasks/{id}") => d("Get a task", None, "200", s(sch!(Task)), STALE_Q, &[]),
        ("get", "/v1/images") => d("List images", None, "200", s(sch!(Page<Image>)), LIST_Q, &[]),
        ("post", "/v1/images") => d("Create an image", s(sch!(CreateImage)), "201", s(sch!(Image)), &[], IDEM),
        ("get", "/v1/images/{id}") => d("Get an image", None, "200", s(sch!(Image)), STALE_Q, &[]),
        ("patch", "/v1/images/{id}") => d("Update an image", s(sch!(UpdateImage)), "200", s(sch!(Image)), &[], IFM),
        ("delete", "/v1/images/{id}") => d("Delete an unused image", None, "204", None, &[], IFM),
        ("get", "/v1/subnets") => d("List subnets", None, "200", s(sch!(Page<Subnet>)), LOC_Q, &[]),
        ("post", "/v1/subnets") => d("Create a subnet", s(sch!(CreateSubnet)), "201", s(sch!(Subnet)), &[], IDEM),
        ("get", "/v1/subnets/{id}") => d("Get a subnet", None, "200", s(sch!(Subnet)), STALE_Q, &[]),
        ("patch", "/v1/subnets/{id}") => d("Update a subnet", s(sch!(UpdateSubnet)), "200", s(sch!(Subnet)), &[], IFM),
        ("delete", "/v1/subnets/{id}") => d("Delete a subnet without assigned IPs", None, "204", None, &[], IFM),
        other => panic!("route {other:?} has no OpenAPI description: add one in api/openapi.rs"),
    }
}

fn error_ref() -> Value {
    json!({"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
}

/// The full OpenAPI document.
pub fn document() -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let _ = g.subschema_for::<ErrorBody>();
    let mut paths = Map::new();
    for (method, path) in super::routes::ROUTES {
        let d = doc(&mut g, method, path);
        let mut params = Vec::new();
        if path.contains("{id}") {
            params.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}));
        }
        for (name, ty, desc) in d.query {
            params.push(json!({"name": name, "in": "query", "required": false, "description": desc, "schema": {"type": ty}}));
        }
        for h in d.headers {
            let desc = match *h {
                "If-Match" => "Expected entity version; 412 on mismatch",
                _ => "Client key: a retried request returns the first success",
            };
            params.push(json!({"name": h, "in": "header", "required": false, "description": desc, "schema": {"type": "string"}}));
        }
        let mut responses = Map::new();
        responses.insert(
            d.status.to_string(),
            match d.response {
                Some(r) => {
                    json!({"description": "OK", "content": {"application/json": {"schema": r}}})
                }
                None => json!({"description": "Done"}),
            },
        );
        responses.insert("default".into(), error_ref());
        let mut op = json!({
            "summary": d.summary,
            "operationId": format!("{method}_{}", path.trim_start_matches("/v1/").replace(['/', '{', '}'], "_").trim_end_matches('_')),
            "parameters": params,
            "responses": responses,
        });
        if d.open {
            op["security"] = json!([]);
        }
        if let Some(b) = d.body {
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": b}}});
        }
        paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("object")
            .insert(method.to_string(), op);
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
        assert_eq!(n, super::super::routes::ROUTES.len());
    }
}
