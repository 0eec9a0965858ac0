//! The endpoint table: every route of the API in one place — method, path, handler, summary,
//! whether it needs a token, its query parameters and headers, its request type, its success
//! status and response type. The router (`super::router`), the auth rule ([`is_open`]), the OpenAPI
//! document (`super::openapi`) and the tests all read [`ENDPOINTS`]; adding an endpoint is one
//! entry here plus its handler.
//!
//! Each entry binds its declared response type to its handler at compile time: the handler's
//! answer (`Json<T>`, `(StatusCode, Json<T>)`, `StatusCode`, or a `HttpResult` of one) must
//! carry exactly the declared `returns` type (none for an empty body), or the crate does not
//! build. At run time `decode_response` checks a body against the same type (used by the
//! tests that call every endpoint).
//!
//! Layer: part of `api`; depends on the handlers beside it and on `rackd_types`.

use std::future::Future;

use axum::http::StatusCode;
use axum::routing::MethodRouter;
use axum::Json;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;

use rackd_types::*;

use super::{
    backup, blobs, cluster, events, inventory, metrics, tasks, webhooks, AppState, HttpResult,
};

/// The media type of a success body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    /// Raw bytes (downloads: ranges and conditional requests apply).
    Octets,
    /// The Prometheus text exposition format.
    Exposition,
}

impl Media {
    pub fn mime(self) -> &'static str {
        match self {
            Media::Json => "application/json",
            Media::Octets => "application/octet-stream",
            Media::Exposition => "text/plain",
        }
    }
}

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    /// Lower case, as OpenAPI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    pub fn http(self) -> axum::http::Method {
        match self {
            Verb::Get => axum::http::Method::GET,
            Verb::Post => axum::http::Method::POST,
            Verb::Put => axum::http::Method::PUT,
            Verb::Patch => axum::http::Method::PATCH,
            Verb::Delete => axum::http::Method::DELETE,
        }
    }
}

/// Who may call an endpoint: anyone, or a valid API token (`Authorization: Bearer …`) of at
/// least a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Any token: reads.
    Reader,
    /// An operator or admin token: inventory, power, deploy, tasks.
    Operator,
    /// An admin token: tokens and cluster membership.
    Admin,
    /// Anyone: the endpoint checks its own credential (join token) or has none (health).
    Open,
}

impl Auth {
    /// The least role that may call the endpoint; `None` for open endpoints.
    pub fn role(self) -> Option<ApiRole> {
        match self {
            Auth::Reader => Some(ApiRole::Reader),
            Auth::Operator => Some(ApiRole::Operator),
            Auth::Admin => Some(ApiRole::Admin),
            Auth::Open => None,
        }
    }
}

/// A query parameter: name, JSON type, description.
pub type QueryParam = (&'static str, &'static str, &'static str);

/// A request header an endpoint honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    IfMatch,
    IdempotencyKey,
}

impl Header {
    pub fn name(self) -> &'static str {
        match self {
            Header::IfMatch => "If-Match",
            Header::IdempotencyKey => "Idempotency-Key",
        }
    }
    pub fn description(self) -> &'static str {
        match self {
            Header::IfMatch => "Expected entity version; 412 on mismatch",
            Header::IdempotencyKey => "Client key: a retried request returns the first success",
        }
    }
}

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// One row of the table.
pub struct Endpoint {
    pub verb: Verb,
    /// Path template in OpenAPI (and axum) syntax: `/v1/machines/{id}`.
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    pub query: &'static [QueryParam],
    pub headers: &'static [Header],
    /// The request body's schema, when the endpoint takes one (JSON, or raw bytes when
    /// `raw_request`).
    pub request: Option<SchemaFn>,
    /// The request body is raw bytes (`application/octet-stream`), not JSON.
    pub raw_request: bool,
    /// The success body's media type.
    pub response_media: Media,
    /// The success status.
    pub status: u16,
    /// The success body's schema (none: empty body).
    pub response: Option<SchemaFn>,
    /// With `follow=true`, the answer is instead a `text/event-stream` whose messages carry
    /// this type (`events::Listing`).
    pub stream: Option<SchemaFn>,
    /// Decode a success body as the declared response type (an empty body when none).
    pub decode_response: fn(&[u8]) -> Result<(), String>,
    /// The handler, as a method router for this verb.
    pub route: fn() -> MethodRouter<AppState>,
}

impl Endpoint {
    /// The OpenAPI `operationId`.
    pub fn operation_id(&self) -> String {
        format!(
            "{}_{}",
            self.verb.as_str(),
            self.path
                .trim_start_matches("/v1/")
                .replace(['/', '{', '}'], "_")
                .trim_end_matches('_')
        )
    }
}

/// What a handler answers, reduced to the type of its success body.
pub trait Answer {
    type Body;
}
impl<T> Answer for Json<T> {
    type Body = T;
}
impl<T> Answer for (StatusCode, Json<T>) {
    type Body = T;
}
impl Answer for StatusCode {
    type Body = ();
}
impl<A: Answer> Answer for HttpResult<A> {
    type Body = A::Body;
}
/// A streamed response (blob downloads): raw bytes.
impl Answer for axum::response::Response {
    type Body = Octets;
}
/// Metrics in the Prometheus text format.
impl Answer for super::metrics::Scrape {
    type Body = Exposition;
}
/// A page, or with `follow=true` a stream of its items.
impl<T> Answer for events::Listing<T> {
    type Body = Page<T>;
}

/// What a handler that can follow streams, reduced to the type of the stream's items.
pub trait Follows {
    type Item;
}
impl<T> Follows for events::Listing<T> {
    type Item = T;
}
impl<A: Follows> Follows for HttpResult<A> {
    type Item = A::Item;
}

/// Compiles only when handler `_h` streams `I`s.
pub fn follows<I, Args, H>(_h: &H)
where
    H: AsyncFn<Args>,
    H::Output: Follows<Item = I>,
{
}

/// An async function of any arity (up to the handlers' six), with its output type.
pub trait AsyncFn<Args> {
    type Output;
}
macro_rules! async_fn_arity {
    ($($a:ident),*) => {
        impl<F, Fut, $($a,)*> AsyncFn<($($a,)*)> for F
        where
            F: Fn($($a),*) -> Fut,
            Fut: Future,
        {
            type Output = Fut::Output;
        }
    };
}
async_fn_arity!();
async_fn_arity!(A1);
async_fn_arity!(A2, A1);
async_fn_arity!(A3, A2, A1);
async_fn_arity!(A4, A3, A2, A1);
async_fn_arity!(A5, A4, A3, A2, A1);
async_fn_arity!(A6, A5, A4, A3, A2, A1);

/// Compiles only when handler `_h` answers a `B`.
pub fn answers<B, Args, H>(_h: &H)
where
    H: AsyncFn<Args>,
    H::Output: Answer<Body = B>,
{
}

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<T>(b)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Raw bytes: any body is one.
fn decode_octets(_: &[u8]) -> Result<(), String> {
    Ok(())
}

fn decode_exposition(b: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(b).map_err(|e| format!("metrics are not UTF-8: {e}"))?;
    match text.lines().find(|l| !l.is_empty() && !l.starts_with('#')) {
        Some(l) if l.starts_with("rackd_") => Ok(()),
        Some(l) => Err(format!("not a rackd metric line: {l:?}")),
        None => Err("no samples".to_string()),
    }
}

fn exposition_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({"type": "string", "description": "Prometheus text exposition format 0.0.4"})
}

fn octets_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({"type": "string", "format": "binary"})
}

fn decode_empty(b: &[u8]) -> Result<(), String> {
    if b.is_empty() {
        Ok(())
    } else {
        Err(format!("expected an empty body, got {} bytes", b.len()))
    }
}

macro_rules! endpoints {
    (@verb GET) => { Verb::Get };
    (@verb POST) => { Verb::Post };
    (@verb PUT) => { Verb::Put };
    (@verb PATCH) => { Verb::Patch };
    (@verb DELETE) => { Verb::Delete };
    (@route GET $h:path) => { || axum::routing::get($h) };
    (@route POST $h:path) => { || axum::routing::post($h) };
    (@route PUT $h:path) => { || axum::routing::put($h) };
    (@route PATCH $h:path) => { || axum::routing::patch($h) };
    (@route DELETE $h:path) => { || axum::routing::delete($h) };
    (@schema [] []) => { None };
    (@schema [$t:ty] []) => { Some(schema::<$t> as SchemaFn) };
    (@schema [] [Octets]) => { Some(octets_schema as SchemaFn) };
    (@schema [] [Exposition]) => { Some(exposition_schema as SchemaFn) };
    (@raw []) => { false };
    (@raw [Octets]) => { true };
    (@media []) => { Media::Json };
    (@media [Octets]) => { Media::Octets };
    (@media [Exposition]) => { Media::Exposition };
    (@decode [] []) => { decode_empty };
    (@decode [$t:ty] []) => { decode::<$t> };
    (@decode [] [Octets]) => { decode_octets };
    (@decode [] [Exposition]) => { decode_exposition };
    (@body) => { () };
    (@body $t:ty) => { $t };
    ($(
        $verb:ident $path:literal => $handler:path {
            $summary:literal,
            auth: $auth:ident,
            query: $query:expr,
            headers: $headers:expr,
            $(body: $Req:ty,)?
            $(raw_body: $RawReq:ident,)?
            status: $status:literal,
            $(returns: $Resp:ty,)?
            $(raw_returns: $RawResp:ident,)?
            $(follow: $Item:ty,)?
        }
    )*) => {
        /// Every endpoint of the API, in documentation order.
        pub static ENDPOINTS: &[Endpoint] = &[$(
            Endpoint {
                verb: endpoints!(@verb $verb),
                path: $path,
                summary: $summary,
                auth: Auth::$auth,
                query: $query,
                headers: $headers,
                request: endpoints!(@schema [$($Req)?] [$($RawReq)?]),
                raw_request: endpoints!(@raw [$($RawReq)?]),
                response_media: endpoints!(@media [$($RawResp)?]),
                status: $status,
                response: endpoints!(@schema [$($Resp)?] [$($RawResp)?]),
                decode_response: endpoints!(@decode [$($Resp)?] [$($RawResp)?]),
                stream: endpoints!(@schema [$($Item)?] []),
                route: endpoints!(@route $verb $handler),
            },
        )*];

        /// The declared response types, bound to the handlers (checked by the compiler).
        #[allow(dead_code)]
        fn declared_types_match_the_handlers() {
            $( answers::<endpoints!(@body $($Resp)? $($RawResp)?), _, _>(&$handler); )*
            $( $( follows::<$Item, _, _>(&$handler); )? )*
        }
    };
}

const PAGE_Q: [QueryParam; 3] = [
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
const LIST_Q: &[QueryParam] = &PAGE_Q;
const MACHINE_Q: &[QueryParam] = &[
    PAGE_Q[0],
    PAGE_Q[1],
    PAGE_Q[2],
    ("location", "string", "Only machines of this location"),
    ("state", "string", "Only machines in this lifecycle state"),
    ("rack", "integer", "Only machines in this rack"),
];
const LOC_Q: &[QueryParam] = &[
    PAGE_Q[0],
    PAGE_Q[1],
    PAGE_Q[2],
    ("location", "string", "Only entries of this location"),
];
const STALE_Q: &[QueryParam] = &[("stale", "boolean", "Serve from the local replica")];
const EVENT_Q: &[QueryParam] = &[
    (
        "after",
        "integer",
        "Only events with a sequence number greater than this (a stream without it starts after the newest event)",
    ),
    ("limit", "integer", "Page size, 1..=1000 (default 100; pages only)"),
    ("stale", "boolean", "Serve from the local replica"),
    (
        "follow",
        "boolean",
        "Stream the journal as server-sent events instead of answering one page",
    ),
    (
        "kind",
        "string",
        "Only this kind (machine.created) or family (machine)",
    ),
    (
        "entity",
        "string",
        "Only events about this kind of entity (machine, task, ...)",
    ),
    (
        "entity_id",
        "integer",
        "Only events about the entity with this id (with entity)",
    ),
];
const NO_Q: &[QueryParam] = &[];
const SOURCE_Q: &[QueryParam] = &[(
    "source",
    "string",
    "Only this source address (default: every source)",
)];
const NO_H: &[Header] = &[];
const IDEM: &[Header] = &[Header::IdempotencyKey];
const IFM: &[Header] = &[Header::IfMatch, Header::IdempotencyKey];

endpoints! {
    GET "/v1/health" => cluster::health {
        "Node health and Raft state (no auth)",
        auth: Open, query: NO_Q, headers: NO_H,
        status: 200, returns: Health,
    }
    GET "/v1/ready" => cluster::ready {
        "Readiness (no auth): 200 when this node knows a leader and has applied its commit index; 503 saying why otherwise",
        auth: Open, query: NO_Q, headers: NO_H,
        status: 200, returns: Ready,
    }
    GET "/metrics" => metrics::scrape {
        "This node's metrics in the Prometheus text format (Raft, API, DHCP, TFTP, BMC calls, machines and tasks)",
        auth: Reader, query: NO_Q, headers: NO_H,
        status: 200, raw_returns: Exposition,
    }
    GET "/v1/cluster" => cluster::cluster_info {
        "Members, leader, term, commit index",
        auth: Reader, query: STALE_Q, headers: NO_H,
        status: 200, returns: ClusterInfo,
    }
    POST "/v1/cluster/join" => cluster::join {
        "Join: phase 1 allocates a node id, phase 2 (node_id set) adds the node (auth: join token)",
        auth: Open, query: NO_Q, headers: NO_H,
        body: JoinRequest,
        status: 200, returns: JoinResponse,
    }
    POST "/v1/cluster/certificates/renew" => cluster::renew_certs {
        "Every node renews its certificate (a new key and certificate, no restart) within a minute",
        auth: Admin, query: NO_Q, headers: IDEM,
        status: 202, returns: CertRenewal,
    }
    DELETE "/v1/cluster/members/{id}" => cluster::remove_member {
        "Remove a member (voter or learner)",
        auth: Admin, query: NO_Q, headers: NO_H,
        status: 204,
    }
    POST "/v1/backup" => backup::create {
        "A backup: the replicated state as of now (every acknowledged write) and the cluster CA sealed with the passphrase, in one checksummed file (voters only; `rackd backup create`)",
        auth: Admin, query: NO_Q, headers: NO_H,
        body: CreateBackup,
        status: 200, raw_returns: Octets,
    }
    GET "/v1/events" => events::list {
        "Journal of changes, oldest first; with follow=true a stream of server-sent events (text/event-stream) from any node: first `event: open` (EventStreamOpen) saying where it starts, then for each event `id:` its sequence number (resume with Last-Event-ID or after), `data:` the event as JSON; `event: gap` (EventGap) when asked-for events left the journal; `event: end` (ErrorBody) when the server ends the stream",
        auth: Reader, query: EVENT_Q, headers: NO_H,
        status: 200, returns: Page<Event>, follow: Event,
    }
    GET "/v1/tokens/join" => cluster::list_join_tokens {
        "List join tokens (no secrets)",
        auth: Admin, query: LIST_Q, headers: NO_H,
        status: 200, returns: Page<JoinTokenView>,
    }
    POST "/v1/tokens/join" => cluster::create_join_token {
        "Create a one-time join token",
        auth: Admin, query: NO_Q, headers: IDEM,
        body: CreateJoinToken,
        status: 201, returns: CreatedJoinToken,
    }
    DELETE "/v1/tokens/join/{id}" => cluster::revoke_join_token {
        "Revoke a join token (neither join phase admits it from then on)",
        auth: Admin, query: NO_Q, headers: IDEM,
        status: 204,
    }
    GET "/v1/tokens/api" => cluster::list_api_tokens {
        "List API tokens (no secrets)",
        auth: Admin, query: LIST_Q, headers: NO_H,
        status: 200, returns: Page<ApiTokenView>,
    }
    POST "/v1/tokens/api" => cluster::create_api_token {
        "Create an API token",
        auth: Admin, query: NO_Q, headers: IDEM,
        body: CreateApiToken,
        status: 201, returns: CreatedApiToken,
    }
    DELETE "/v1/tokens/api/{id}" => cluster::revoke_api_token {
        "Revoke an API token (never the last admin token without an expiry)",
        auth: Admin, query: NO_Q, headers: IDEM,
        status: 204,
    }
    GET "/v1/locations" => inventory::list_locations {
        "List locations",
        auth: Reader, query: LIST_Q, headers: NO_H,
        status: 200, returns: Page<Location>,
    }
    POST "/v1/locations" => inventory::create_location {
        "Create a location",
        auth: Operator, query: NO_Q, headers: IDEM,
        body: CreateLocation,
        status: 201, returns: Location,
    }
    GET "/v1/locations/{id}" => inventory::get_location {
        "Get a location",
        auth: Reader, query: STALE_Q, headers: NO_H,
        status: 200, returns: Location,
    }
    PATCH "/v1/locations/{id}" => inventory::update_location {
        "Update a location",
        auth: Operator, query: NO_Q, headers: IFM,
        body: UpdateLocation,
        status: 200, returns: Location,
    }
    DELETE "/v1/locations/{id}" => inventory::delete_location {
        "Delete an unused location",
        auth: Operator, query: NO_Q, headers: IFM,
        status: 204,
    }
    GET "/v1/racks" => inventory::list_racks {
        "List racks",
        auth: Reader, query: LOC_Q, headers: NO_H,
        status: 200, returns: Page<Rack>,
    }
    POST "/v1/racks" => inventory::create_rack {
        "Create a rack",
        auth: Operator, query: NO_Q, headers: IDEM,
        body: CreateRack,
        status: 201, returns: Rack,
    }
    GET "/v1/racks/{id}" => inventory::get_rack {
        "Get a rack",
        auth: Reader, query: STALE_Q, headers: NO_H,
        status: 200, returns: Rack,
    }
    PATCH "/v1/racks/{id}" => inventory::update_rack {
        "Update a rack",
        auth: Operator, query: NO_Q, headers: IFM,
        body: UpdateRack,
        status: 200, returns: Rack,
    }
    DELETE "/v1/racks/{id}" => inventory::delete_rack {
        "Delete an empty rack",
        auth: Operator, query: NO_Q, headers: IFM,
        status: 204,
    }
    GET "/v1/machines" => inventory::list_machines {
        "List machines",
        auth: Reader, query: MACHINE_Q, headers: NO_H,
        status: 200, returns: Page<Machine>,
    }
    POST "/v1/machines" => inventory::create_machine {
        "Create a machine",
        auth: Operator, query: NO_Q, headers: IDEM,
        body: CreateMachine,
        status: 201, returns: Machine,
    }
    GET "/v1/machines/{id}" => inventory::get_machine {
        "Get a machine",
        auth: Reader, query: STALE_Q, headers: NO_H,
        status: 200, returns: Machine,
    }
    PATCH "/v1/machines/{id}" => inventory::update_machine {
        "Update a machine",
        auth: Operator, query: NO_Q, headers: IFM,
        body: UpdateMachine,
        status: 200, returns: Machine,
    }
    DELETE "/v1/machines/{id}" => inventory::delete_machine {
        "Delete a machine",
        auth: Operator, query: NO_Q, headers: IFM,
        status: 204,
    }
    POST "/v1/machines/{id}/deploy" => inventory::deploy_machine {
        "Deploy an image on a ready machine (ready -> deploying; one-time install token)",
        auth: Operator, query: NO_Q, headers: IFM,
        body: DeployMachine,
        status: 200, returns: Machine,
    }
    POST "/v1/machines/{id}/release" => inventory::release_machine {
        "Release a deployed or failed machine: a release task powers it off, then it is ready",
        auth: Operator, query: NO_Q, headers: IFM,
        body: ReleaseMachine,
        status: 200, returns: Machine,
    }
    POST "/v1/machines/{id}/power" => tasks::power {
        "Power action (on, off, cycle, reset, status) as a task run at the machine's location",
        auth: Operator, query: NO_Q, headers: IDEM,
        body: PowerRequest,
        status: 202, returns: Task,
    }
    POST "/v1/machines/{id}/bmc-session" => tasks::bmc_session {
        "Let one address reach the machine's BMC through its location's IPMI proxies, for a while",
        auth: Operator, query: NO_Q, headers: IDEM,
        body: BmcSessionRequest,
        status: 201, returns: BmcSession,
    }
    GET "/v1/machines/{id}/bmc-sessions" => tasks::list_bmc_sessions {
        "The open BMC sessions of a machine (who may reach its BMC through the IPMI proxies, until when)",
        auth: Reader, query: STALE_Q, headers: NO_H,
        status: 200, returns: Vec<BmcSession>,
    }
    DELETE "/v1/machines/{id}/bmc-sessions" => tasks::revoke_bmc_sessions {
        "Close the machine's BMC session for one source (?source=IP), or all of them",
        auth: Operator, query: SOURCE_Q, headers: IDEM,
        status: 204,
    }
    POST "/v1/machines/{id}/boot-device" => tasks::boot_device {
        "Set the boot device (pxe or disk, next boot or persistent) as a task run at the machine's location",
        auth: Operator, query: NO_Q, headers: IDEM,
        body: BootDeviceRequest,
        status: 202, returns: Task,
    }
    GET "/v1/tasks" => tasks::list_tasks {
        "List tasks",
        auth: Reader, query: LIST_Q, headers: NO_H,
        status: 200, returns: Page<Task>,
    }
    GET "/v1/tasks/{id}" => tasks::get_task {
        "Get a task",
        auth: Reader, query: STALE_Q, headers: NO_H,
        status: 200, returns: Task,
    }
    POST "/v1/tasks/{id}/cancel" => tasks::cancel_task {
        "Cancel a pending or running task (a running attempt is fenced); 409 when finished",
        auth: Operator, query: NO_Q, headers: IDEM,
        status: 200, returns: Task,
    }
    POST "/v1/tasks/{id}/retry" => tasks::retry_task {
        "Run a failed or cancelled deploy or release again from the step where it stopped",
        auth: Operator, query: NO_Q, headers: IDEM,
        status: 200, returns: Task,
    }
    GET "/v1/images" => inventory::list_images {
        "List images",
        auth: Reader, query: LIST_Q, headers: NO_H,
        status: 200, returns: Page<Image>,
    }
    POST "/v1/images" => inventory::create_image {
        "Create an image",
        auth: Operator, query: NO_Q, headers: IDEM,
        body: CreateImage,
        status: 201, returns: Image,
    }
    GET "/v1/images/{id}" => inventory::get_image {
        "Get an image",
        auth: Reader, query: STALE_Q, headers: NO_H,
        status: 200, returns: Image,
    }
    PATCH "/v1/images/{id}" => inventory::update_image {
        "Update an image",
        auth: Operator, query: NO_Q, headers: IFM,
        body: UpdateImage,
        status: 200, returns: Image,
    }
    DELETE "/v1/images/{id}" => inventory::delete_image {
        "Delete an unused image",
        auth: Operator, query: NO_Q, headers: IFM,
        status: 204,
    }
    GET "/v1/blobs" => blobs::list_blobs {
        "List stored artifacts (content-addressed blobs) and the nodes holding each",
        auth: Reader, query: LIST_Q, headers: NO_H,
        status: 200, returns: Page<Blob>,
    }
    PUT "/v1/blobs/{digest}" => blobs::put_blob {
        "Upload an artifact named by its SHA-256 (streamed, verified; answered once two voters hold it; never forwarded)",
        auth: Operator, query: NO_Q, headers: NO_H,
        raw_body: Octets,
        status: 201, returns: Blob,
    }
    GET "/v1/blobs/{digest}" => blobs::get_blob {
        "Download an artifact (from this node's copy or a holder's; Range requests answer 206)",
        auth: Reader, query: NO_Q, headers: NO_H,
        status: 200, raw_returns: Octets,
    }
    DELETE "/v1/blobs/{digest}" => blobs::delete_blob {
        "Forget an artifact: every holder removes its copy",
        auth: Operator, query: NO_Q, headers: IDEM,
        status: 204,
    }
    GET "/v1/webhooks" => webhooks::list_webhooks {
        "List webhooks with how far delivery to each got (admin)",
        auth: Admin, query: LIST_Q, headers: NO_H,
        status: 200, returns: Page<Webhook>,
    }
    POST "/v1/webhooks" => webhooks::create_webhook {
        "Register a webhook: the journal's events of its kinds are POSTed to it, signed (HMAC-SHA256), at least once each, in order; a generated secret is answered once",
        auth: Admin, query: NO_Q, headers: IDEM,
        body: CreateWebhook,
        status: 201, returns: CreatedWebhook,
    }
    GET "/v1/webhooks/{id}" => webhooks::get_webhook {
        "Get a webhook and its delivery state (admin)",
        auth: Admin, query: STALE_Q, headers: NO_H,
        status: 200, returns: Webhook,
    }
    PATCH "/v1/webhooks/{id}" => webhooks::update_webhook {
        "Change a webhook's URL, kinds, secret or whether it is enabled",
        auth: Admin, query: NO_Q, headers: IFM,
        body: UpdateWebhook,
        status: 200, returns: Webhook,
    }
    DELETE "/v1/webhooks/{id}" => webhooks::delete_webhook {
        "Remove a webhook: nothing more is sent to it",
        auth: Admin, query: NO_Q, headers: IFM,
        status: 204,
    }
    GET "/v1/subnets" => inventory::list_subnets {
        "List subnets",
        auth: Reader, query: LOC_Q, headers: NO_H,
        status: 200, returns: Page<Subnet>,
    }
    POST "/v1/subnets" => inventory::create_subnet {
        "Create a subnet",
        auth: Operator, query: NO_Q, headers: IDEM,
        body: CreateSubnet,
        status: 201, returns: Subnet,
    }
    GET "/v1/subnets/{id}" => inventory::get_subnet {
        "Get a subnet",
        auth: Reader, query: STALE_Q, headers: NO_H,
        status: 200, returns: Subnet,
    }
    PATCH "/v1/subnets/{id}" => inventory::update_subnet {
        "Update a subnet",
        auth: Operator, query: NO_Q, headers: IFM,
        body: UpdateSubnet,
        status: 200, returns: Subnet,
    }
    DELETE "/v1/subnets/{id}" => inventory::delete_subnet {
        "Delete a subnet without assigned IPs",
        auth: Operator, query: NO_Q, headers: IFM,
        status: 204,
    }
}

/// Whether `method path` is an [`Auth::Open`] endpoint (open endpoints have no path
/// parameters, so the path is compared as is).
pub fn is_open(method: &axum::http::Method, path: &str) -> bool {
    ENDPOINTS
        .iter()
        .any(|e| e.auth == Auth::Open && e.path == path && e.verb.http() == *method)
}

/// The endpoint serving `method path` (a concrete path: `{id}` segments match any one
/// segment), if any. `HEAD` is served by the `GET` endpoint (and needs its role).
pub fn endpoint_for(method: &axum::http::Method, path: &str) -> Option<&'static Endpoint> {
    let method = if method == axum::http::Method::HEAD {
        &axum::http::Method::GET
    } else {
        method
    };
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ENDPOINTS.iter().find(|e| {
        e.verb.http() == *method && {
            let t: Vec<&str> = e.path.split('/').collect();
            t.len() == segs.len()
                && t.iter()
                    .zip(&segs)
                    .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
        }
    })
}
