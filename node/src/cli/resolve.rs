//! Names and ids alike: wherever a CLI command names a resource, it takes its id or its name
//! (a machine's hostname, a location's, rack's, image's, webhook's or API token's name, a
//! subnet's CIDR). A number is an id; anything else is looked up in the collection, and a
//! name several resources share (racks of one name in two locations, hosts named alike
//! before names were unique) is refused with the ids to pick from.
//!
//! Layer: part of `cli`; talks to the API through `client` only.

use anyhow::bail;
use rackd_types::{ApiTokenView, Image, Location, Machine, Rack, Subnet, Webhook};
use serde::de::DeserializeOwned;

use crate::client::Client;

/// The id of the one item of `path` that `key` names (an id, or a name per `name_of`).
async fn resolve<T: DeserializeOwned>(
    c: &Client,
    what: &str,
    path: &str,
    key: &str,
    name_of: impl Fn(&T) -> &str,
    id_of: impl Fn(&T) -> u64,
) -> anyhow::Result<u64> {
    if let Ok(id) = key.parse::<u64>() {
        return Ok(id);
    }
    let all: Vec<T> = c.get_all(path).await?;
    let ids: Vec<u64> = all
        .iter()
        .filter(|x| name_of(x).eq_ignore_ascii_case(key))
        .map(&id_of)
        .collect();
    match ids.as_slice() {
        [id] => Ok(*id),
        [] => bail!("no {what} is named {key:?}"),
        many => bail!(
            "{} {what}s are named {key:?} (ids {}): give the id",
            many.len(),
            many.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub async fn machine(c: &Client, key: &str) -> anyhow::Result<u64> {
    resolve(
        c,
        "machine",
        "/v1/machines",
        key,
        |m: &Machine| &m.hostname,
        |m| m.meta.id,
    )
    .await
}

pub async fn location(c: &Client, key: &str) -> anyhow::Result<u64> {
    resolve(
        c,
        "location",
        "/v1/locations",
        key,
        |l: &Location| &l.name,
        |l| l.meta.id,
    )
    .await
}

pub async fn rack(c: &Client, key: &str) -> anyhow::Result<u64> {
    resolve(
        c,
        "rack",
        "/v1/racks",
        key,
        |r: &Rack| &r.name,
        |r| r.meta.id,
    )
    .await
}

pub async fn subnet(c: &Client, key: &str) -> anyhow::Result<u64> {
    resolve(
        c,
        "subnet",
        "/v1/subnets",
        key,
        |s: &Subnet| &s.cidr,
        |s| s.meta.id,
    )
    .await
}

pub async fn image(c: &Client, key: &str) -> anyhow::Result<u64> {
    resolve(
        c,
        "image",
        "/v1/images",
        key,
        |i: &Image| &i.name,
        |i| i.meta.id,
    )
    .await
}

pub async fn api_token(c: &Client, key: &str) -> anyhow::Result<u64> {
    resolve(
        c,
        "API token",
        "/v1/tokens/api",
        key,
        |t: &ApiTokenView| &t.name,
        |t| t.id,
    )
    .await
}

pub async fn webhook(c: &Client, key: &str) -> anyhow::Result<u64> {
    resolve(
        c,
        "webhook",
        "/v1/webhooks",
        key,
        |w: &Webhook| &w.name,
        |w| w.meta.id,
    )
    .await
}
