//! The route table: every (method, path) the API serves. The OpenAPI document in
//! `openapi/rackd.json` must list exactly these (checked by a test).

use axum::routing::{get, post};
use axum::Router;

use super::{auth, cluster, forward, inventory, AppState};

/// (method, path template) of every route, in OpenAPI path syntax.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/health"),
    ("get", "/v1/cluster"),
    ("post", "/v1/cluster/join"),
    ("delete", "/v1/cluster/members/{id}"),
    ("get", "/v1/events"),
    ("get", "/v1/tokens/join"),
    ("post", "/v1/tokens/join"),
    ("get", "/v1/tokens/api"),
    ("post", "/v1/tokens/api"),
    ("get", "/v1/locations"),
    ("post", "/v1/locations"),
    ("get", "/v1/locations/{id}"),
    ("patch", "/v1/locations/{id}"),
    ("delete", "/v1/locations/{id}"),
    ("get", "/v1/racks"),
    ("post", "/v1/racks"),
    ("get", "/v1/racks/{id}"),
    ("patch", "/v1/racks/{id}"),
    ("delete", "/v1/racks/{id}"),
    ("get", "/v1/machines"),
    ("post", "/v1/machines"),
    ("get", "/v1/machines/{id}"),
    ("patch", "/v1/machines/{id}"),
    ("delete", "/v1/machines/{id}"),
    ("post", "/v1/machines/{id}/deploy"),
    ("post", "/v1/machines/{id}/power"),
    ("post", "/v1/machines/{id}/boot-device"),
    ("get", "/v1/tasks"),
    ("get", "/v1/tasks/{id}"),
    ("get", "/v1/images"),
    ("post", "/v1/images"),
    ("get", "/v1/images/{id}"),
    ("patch", "/v1/images/{id}"),
    ("delete", "/v1/images/{id}"),
    ("get", "/v1/subnets"),
    ("post", "/v1/subnets"),
    ("get", "/v1/subnets/{id}"),
    ("patch", "/v1/subnets/{id}"),
    ("delete", "/v1/subnets/{id}"),
];

pub fn router(node: AppState) -> Router {
    use inventory::*;
    Router::new()
        .route("/v1/health", get(cluster::health))
        .route("/v1/cluster", get(cluster::cluster_info))
        .route("/v1/cluster/join", post(cluster::join))
        .route(
            "/v1/cluster/members/{id}",
            axum::routing::delete(cluster::remove_member),
        )
        .route("/v1/events", get(cluster::events))
        .route(
            "/v1/tokens/join",
            get(cluster::list_join_tokens).post(cluster::create_join_token),
        )
        .route(
            "/v1/tokens/api",
            get(cluster::list_api_tokens).post(cluster::create_api_token),
        )
        .route("/v1/locations", get(list_locations).post(create_location))
        .route(
            "/v1/locations/{id}",
            get(get_location)
                .patch(update_location)
                .delete(delete_location),
        )
        .route("/v1/racks", get(list_racks).post(create_rack))
        .route(
            "/v1/racks/{id}",
            get(get_rack).patch(update_rack).delete(delete_rack),
        )
        .route("/v1/machines", get(list_machines).post(create_machine))
        .route(
            "/v1/machines/{id}",
            get(get_machine)
                .patch(update_machine)
                .delete(delete_machine),
        )
        .route("/v1/machines/{id}/deploy", post(deploy_machine))
        .route("/v1/machines/{id}/power", post(super::tasks::power))
        .route(
            "/v1/machines/{id}/boot-device",
            post(super::tasks::boot_device),
        )
        .route("/v1/tasks", get(super::tasks::list_tasks))
        .route("/v1/tasks/{id}", get(super::tasks::get_task))
        .route("/v1/images", get(list_images).post(create_image))
        .route(
            "/v1/images/{id}",
            get(get_image).patch(update_image).delete(delete_image),
        )
        .route("/v1/subnets", get(list_subnets).post(create_subnet))
        .route(
            "/v1/subnets/{id}",
            get(get_subnet).patch(update_subnet).delete(delete_subnet),
        )
        .fallback(|| async {
            super::error_response(rackd_types::ErrorCode::NotFound, "no such route")
        })
        .method_not_allowed_fallback(|| async {
            let mut r =
                super::error_response(rackd_types::ErrorCode::InvalidRequest, "method not allowed");
            *r.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
            r
        })
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            forward::to_leader,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024))
        .with_state(node)
}
