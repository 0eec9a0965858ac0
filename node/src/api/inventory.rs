//! Inventory endpoints: locations, racks, machines, subnets — create, list (cursor pagination,
//! filters), get, update (`If-Match`), delete. Writes become Raft commands; reads are served
//! from the local replica after [`crate::cluster::ClusterHandle::linearize`] unless `?stale=true`.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use rackd_raft::cmd::Command;
use rackd_types::{
    ApiError, CreateImage, CreateLocation, CreateMachine, CreateRack, CreateSubnet, DeployMachine,
    Image, ListQuery, Location, Machine, MachineState, Page, Rack, Subnet, UpdateImage,
    UpdateLocation, UpdateMachine, UpdateRack, UpdateSubnet, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT,
};

use super::{
    idempotency_key, if_match, parse_id, parse_json, Actor, AppState, HttpError, HttpResult,
};

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> HttpResult<T> {
    q.map(|Query(v)| v).map_err(|e| {
        HttpError(ApiError::invalid(format!(
            "invalid query: {}",
            e.body_text()
        )))
    })
}

/// Make the following read linearizable unless the caller asked for a stale read.
pub(crate) async fn read_barrier(node: &AppState, stale: Option<bool>) -> HttpResult<()> {
    if stale != Some(true) {
        node.linearize().await?;
    }
    Ok(())
}

pub(crate) fn page_params(q: &ListQuery) -> HttpResult<(Option<u64>, usize)> {
    page_params_with(q, |c| {
        c.parse::<u64>()
            .map_err(|_| HttpError(ApiError::invalid(format!("invalid cursor {c:?}"))))
    })
}

/// The cursor (parsed by `cursor`) and the page size of a list request.
pub(crate) fn page_params_with<K>(
    q: &ListQuery,
    cursor: impl Fn(&str) -> HttpResult<K>,
) -> HttpResult<(Option<K>, usize)> {
    let cursor = match &q.cursor {
        None => None,
        Some(c) if c.is_empty() => None,
        Some(c) => Some(cursor(c)?),
    };
    if let Some(st) = &q.state {
        if MachineState::parse(st).is_none() {
            return Err(HttpError(ApiError::invalid(format!(
                "unknown machine state {st:?}"
            ))));
        }
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(HttpError(ApiError::invalid(format!(
            "limit must be 1..={MAX_PAGE_LIMIT}"
        ))));
    }
    Ok((cursor, limit))
}

/// Collect one page from `(id, item)` pairs in id order.
pub(crate) fn collect_page<'a, T: Clone + 'a>(
    it: impl Iterator<Item = (u64, &'a T)>,
    limit: usize,
    mut keep: impl FnMut(&T) -> bool,
) -> Page<T> {
    let mut items = Vec::new();
    let mut last = 0;
    let mut next_cursor = None;
    for (id, v) in it {
        if !keep(v) {
            continue;
        }
        if items.len() == limit {
            next_cursor = Some(last.to_string());
            break;
        }
        last = id;
        items.push(v.clone());
    }
    Page { items, next_cursor }
}

/// The two read endpoints of a collection: `$list` (cursor pages, filtered) and `$get` (one
/// by id), both linearizable unless `?stale=true`. Used by [`crud!`] and by collections whose
/// writes are their own (webhooks).
macro_rules! reads {
    (
        what: $what:literal,
        table: $table:ident,
        view: $View:ty,
        extract: $extract:expr,
        filter: $filter:expr,
        list: $list:ident,
        get: $get:ident $(,)?
    ) => {
        pub async fn $list(
            State(node): State<AppState>,
            q: Result<Query<ListQuery>, QueryRejection>,
        ) -> HttpResult<Json<Page<$View>>> {
            let q = query(q)?;
            let (cursor, limit) = page_params(&q)?;
            let filter: fn(&ListQuery, &$View) -> HttpResult<bool> = $filter;
            read_barrier(&node, q.stale).await?;
            let st = node.state();
            let extract: fn(&_) -> &$View = $extract;
            let views = st
                .$table
                .range_after(cursor.as_ref())
                .map(|(id, v)| (*id, extract(v)));
            let mut err = None;
            let page = collect_page(views, limit, |v| match filter(&q, v) {
                Ok(k) => k,
                Err(e) => {
                    err.get_or_insert(e);
                    false
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
            Ok(Json(page))
        }

        pub async fn $get(
            State(node): State<AppState>,
            Path(id): Path<String>,
            q: Result<Query<ListQuery>, QueryRejection>,
        ) -> HttpResult<Json<$View>> {
            let id = parse_id(&id)?;
            let q = query(q)?;
            read_barrier(&node, q.stale).await?;
            let st = node.state();
            let extract: fn(&_) -> &$View = $extract;
            st.$table
                .get(&id)
                .map(|v| Json(extract(v).clone()))
                .ok_or_else(|| HttpError(ApiError::not_found(format!("{} {id} not found", $what))))
        }
    };
}
pub(crate) use reads;

macro_rules! crud {
    (
        what: $what:literal,
        table: $table:ident,
        view: $View:ty,
        extract: $extract:expr,
        filter: $filter:expr,
        into: $into:ident,
        create: $create:ident($Create:ty) => $CCmd:ident,
        update: $update:ident($Update:ty) => $UCmd:ident,
        delete: $delete:ident => $DCmd:ident,
        list: $list:ident,
        get: $get:ident $(,)?
    ) => {
        reads! {
            what: $what,
            table: $table,
            view: $View,
            extract: $extract,
            filter: $filter,
            list: $list,
            get: $get,
        }

        pub async fn $create(
            State(node): State<AppState>,
            Extension(actor): Extension<Actor>,
            headers: HeaderMap,
            body: Bytes,
        ) -> HttpResult<(StatusCode, Json<$View>)> {
            let c: $Create = parse_json(&body)?;
            let cmd =
                super::sealing::seal_secrets(&*node.cluster, Command::$CCmd(c.into())).await?;
            let v = node
                .propose(&actor.0, idempotency_key(&headers, &actor)?, cmd)
                .await?
                .$into()?;
            Ok((StatusCode::CREATED, Json(v)))
        }

        pub async fn $update(
            State(node): State<AppState>,
            Extension(actor): Extension<Actor>,
            Path(id): Path<String>,
            headers: HeaderMap,
            body: Bytes,
        ) -> HttpResult<Json<$View>> {
            let id = parse_id(&id)?;
            let patch: $Update = parse_json(&body)?;
            let cmd = Command::$UCmd {
                id,
                if_match: if_match(&headers)?,
                patch: patch.into(),
            };
            let cmd = super::sealing::seal_secrets(&*node.cluster, cmd).await?;
            let v = node
                .propose(&actor.0, idempotency_key(&headers, &actor)?, cmd)
                .await?
                .$into()?;
            Ok(Json(v))
        }

        pub async fn $delete(
            State(node): State<AppState>,
            Extension(actor): Extension<Actor>,
            Path(id): Path<String>,
            headers: HeaderMap,
        ) -> HttpResult<StatusCode> {
            let id = parse_id(&id)?;
            let cmd = Command::$DCmd {
                id,
                if_match: if_match(&headers)?,
            };
            node.propose(&actor.0, idempotency_key(&headers, &actor)?, cmd)
                .await?;
            Ok(StatusCode::NO_CONTENT)
        }
    };
}

fn by_location(q: &ListQuery, loc: &str) -> bool {
    q.location.as_deref().is_none_or(|l| l == loc)
}

crud! {
    what: "location",
    table: locations,
    view: Location,
    extract: |v: &Location| v,
    filter: |_q, _v| Ok(true),
    into: into_location,
    create: create_location(CreateLocation) => CreateLocation,
    update: update_location(UpdateLocation) => UpdateLocation,
    delete: delete_location => DeleteLocation,
    list: list_locations,
    get: get_location,
}

crud! {
    what: "rack",
    table: racks,
    view: Rack,
    extract: |v: &Rack| v,
    filter: |q, v| Ok(by_location(q, &v.location)),
    into: into_rack,
    create: create_rack(CreateRack) => CreateRack,
    update: update_rack(UpdateRack) => UpdateRack,
    delete: delete_rack => DeleteRack,
    list: list_racks,
    get: get_rack,
}

crud! {
    what: "machine",
    table: machines,
    view: Machine,
    extract: |v: &rackd_raft::state::StoredMachine| &v.machine,
    filter: |q, m| {
        let state_ok = match &q.state {
            None => true,
            Some(s) => {
                let want = MachineState::parse(s)
                    .ok_or_else(|| HttpError(ApiError::invalid(format!("unknown machine state {s:?}"))))?;
                m.state == want
            }
        };
        Ok(state_ok && by_location(q, &m.location) && q.rack.is_none_or(|r| m.rack_id == Some(r)))
    },
    into: into_machine,
    create: create_machine(CreateMachine) => CreateMachine,
    update: update_machine(UpdateMachine) => UpdateMachine,
    delete: delete_machine => DeleteMachine,
    list: list_machines,
    get: get_machine,
}

crud! {
    what: "subnet",
    table: subnets,
    view: Subnet,
    extract: |v: &Subnet| v,
    filter: |q, v| Ok(by_location(q, &v.location)),
    into: into_subnet,
    create: create_subnet(CreateSubnet) => CreateSubnet,
    update: update_subnet(UpdateSubnet) => UpdateSubnet,
    delete: delete_subnet => DeleteSubnet,
    list: list_subnets,
    get: get_subnet,
}

crud! {
    what: "image",
    table: images,
    view: Image,
    extract: |v: &Image| v,
    filter: |_q, _v| Ok(true),
    into: into_image,
    create: create_image(CreateImage) => CreateImage,
    update: update_image(UpdateImage) => UpdateImage,
    delete: delete_image => DeleteImage,
    list: list_images,
    get: get_image,
}

/// `POST /v1/machines/{id}/release {"wipe_image"?}`: deployed or failed → releasing; the
/// release workflow (booting the wipe image first, if asked) powers the machine off and
/// returns it to `ready`. The wipe's one-time callback token is generated here, on the leader,
/// and never returned.
pub async fn release_machine(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Json<Machine>> {
    let id = parse_id(&id)?;
    let r: rackd_types::ReleaseMachine = if body.is_empty() {
        Default::default()
    } else {
        parse_json(&body)?
    };
    // A wipe boots an image that calls back like an installer: a one-time token, as a deploy.
    let wipe = match r.wipe_image {
        None => None,
        Some(image) => {
            let token = crate::cluster::secrets::new_secret("");
            let (token, sealed_token) =
                super::sealing::callback_token(&*node.cluster, id, token).await?;
            Some(rackd_raft::cmd::Wipe {
                image,
                token,
                sealed_token,
                boot_timeout_ms: r.boot_timeout_secs.map(|s| s.saturating_mul(1000)),
                wipe_timeout_ms: r.wipe_timeout_secs.map(|s| s.saturating_mul(1000)),
            })
        }
    };
    let cmd = Command::Release {
        id,
        if_match: if_match(&headers)?,
        wipe,
    };
    let v = node
        .propose(&actor.0, idempotency_key(&headers, &actor)?, cmd)
        .await?
        .into_machine()?;
    Ok(Json(v))
}

/// `POST /v1/machines/{id}/deploy {"image"}`: ready → deploying. The one-time install-callback
/// token is generated here, on the leader (writes are forwarded), and never returned.
pub async fn deploy_machine(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Json<Machine>> {
    let id = parse_id(&id)?;
    let d: DeployMachine = parse_json(&body)?;
    let token = crate::cluster::secrets::new_secret("");
    let mut cmd =
        super::sealing::deploy_command(&*node.cluster, id, if_match(&headers)?, d.image, token)
            .await?;
    if let Command::Deploy {
        boot_timeout_ms,
        install_timeout_ms,
        ..
    } = &mut cmd
    {
        *boot_timeout_ms = d.boot_timeout_secs.map(|s| s.saturating_mul(1000));
        *install_timeout_ms = d.install_timeout_secs.map(|s| s.saturating_mul(1000));
    }
    let v = node
        .propose(&actor.0, idempotency_key(&headers, &actor)?, cmd)
        .await?
        .into_machine()?;
    Ok(Json(v))
}
