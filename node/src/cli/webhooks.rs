//! `rackd webhooks …`: register, list, show, change and remove the HTTP endpoints the
//! leader sends events to. A webhook is named by its id or its name alike. Secrets are read
//! from a file (never from the command line, where `ps` and shell history show them).
//!
//! Layer: part of `cli`; talks to the API through `client` only.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use rackd_types::{CreateWebhook, CreatedWebhook, SecretText, UpdateWebhook, Webhook};

use crate::cli::output::{opt, table, time};
use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum WebhookCmd {
    /// Register webhook NAME: every event of the kinds given (all without --kind) is POSTed
    /// to URL as JSON, signed with HMAC-SHA256 in X-Rackd-Signature (t=<unix secs>,v1=<hex>
    /// of "<t>.<body>"), at least once each, in order, retried with backoff while it fails.
    /// The event id is in X-Rackd-Event-Id. Without --secret-file a secret is generated and
    /// printed once.
    Create {
        /// A name no other webhook has (1..=64 of [A-Za-z0-9-._]).
        name: String,
        /// http:// or https:// URL (https trusts the system's CAs).
        url: String,
        /// An event kind (task.finished) or family (machine, task, node, webhook, ...);
        /// repeat for several.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// A file holding the signing secret (16 to 256 bytes; a final newline is dropped).
        #[arg(long)]
        secret_file: Option<std::path::PathBuf>,
        /// Register it disabled (nothing is sent until it is enabled).
        #[arg(long)]
        disabled: bool,
    },
    /// List webhooks and how delivery to each stands.
    List,
    /// Show a webhook (by id or name) and its delivery state.
    Show {
        /// The webhook's id or name.
        webhook: String,
    },
    /// Change a webhook (by id or name).
    Update {
        /// The webhook's id or name.
        webhook: String,
        /// A new http:// or https:// URL.
        #[arg(long)]
        url: Option<String>,
        /// Replace its kinds with these (repeat for several).
        #[arg(long = "kind", conflicts_with = "all_kinds")]
        kinds: Vec<String>,
        /// Send it every event.
        #[arg(long)]
        all_kinds: bool,
        /// A file holding a new signing secret.
        #[arg(long)]
        secret_file: Option<std::path::PathBuf>,
        /// Send it events again (from where delivery stood).
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Send it nothing until it is enabled.
        #[arg(long)]
        disable: bool,
        /// Only if the webhook is still at this version.
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Remove a webhook (by id or name): nothing more is sent to it.
    Remove {
        /// The webhook's id or name.
        webhook: String,
    },
}

fn read_secret(path: &Path) -> anyhow::Result<SecretText> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("read the secret from {}", path.display()))?;
    let s = s.strip_suffix('\n').unwrap_or(&s);
    let s = s.strip_suffix('\r').unwrap_or(s);
    Ok(SecretText(s.to_string()))
}

fn state(w: &Webhook) -> String {
    let d = &w.delivery;
    match (w.enabled, d.failures) {
        (false, _) => "disabled".into(),
        (true, 0) => "ok".into(),
        (true, n) => format!("failing ({n} attempts)"),
    }
}

fn print(w: &Webhook) {
    let d = &w.delivery;
    let kinds = if w.kinds.is_empty() {
        "(every event)".to_string()
    } else {
        w.kinds.join(", ")
    };
    crate::out!("id:                {}", w.meta.id);
    crate::out!("name:              {}", w.name);
    crate::out!("url:               {}", w.url);
    crate::out!("kinds:             {kinds}");
    crate::out!("state:             {}", state(w));
    crate::out!("version:           {}", w.meta.version);
    crate::out!("delivered through: event {}", d.delivered_through);
    crate::out!("last delivered:    {}", opt(&d.last_delivered_at.map(time)));
    if d.failures > 0 {
        crate::out!("failing since:     {}", opt(&d.failing_since.map(time)));
        crate::out!("last error:        {}", opt(&d.last_error));
    }
    if d.missed > 0 {
        crate::out!(
            "missed:            {} events left the journal before they were sent",
            d.missed
        );
    }
}

pub async fn run(c: &Client, json: bool, cmd: WebhookCmd) -> anyhow::Result<()> {
    let show = |w: &Webhook| -> anyhow::Result<()> {
        if json {
            crate::out!("{}", serde_json::to_string_pretty(w)?);
        } else {
            print(w);
        }
        Ok(())
    };
    match cmd {
        WebhookCmd::Create {
            name,
            url,
            kinds,
            secret_file,
            disabled,
        } => {
            let secret = secret_file.as_deref().map(read_secret).transpose()?;
            let body = CreateWebhook {
                name,
                url,
                kinds,
                secret,
                enabled: !disabled,
            };
            let r: CreatedWebhook = c.post("/v1/webhooks", &body).await?;
            if json {
                crate::out!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            print(&r.webhook);
            if let Some(s) = r.secret {
                crate::out!("secret:            {s}");
                crate::out!(
                    "(the secret is shown only now: the receiver checks signatures with it)"
                );
            }
        }
        WebhookCmd::List => {
            let all: Vec<Webhook> = c.get_all("/v1/webhooks").await?;
            if json {
                crate::out!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|w| {
                    vec![
                        w.meta.id.to_string(),
                        w.name.clone(),
                        w.url.clone(),
                        if w.kinds.is_empty() {
                            "*".into()
                        } else {
                            w.kinds.join(",")
                        },
                        state(w),
                        w.delivery.delivered_through.to_string(),
                    ]
                })
                .collect();
            table(&["ID", "NAME", "URL", "KINDS", "STATE", "DELIVERED"], &rows);
        }
        WebhookCmd::Show { webhook } => {
            let id = crate::cli::resolve::webhook(c, &webhook).await?;
            let w: Webhook = c.get(&format!("/v1/webhooks/{id}")).await?;
            show(&w)?;
        }
        WebhookCmd::Update {
            webhook,
            url,
            kinds,
            all_kinds,
            secret_file,
            enable,
            disable,
            if_match,
        } => {
            let id = crate::cli::resolve::webhook(c, &webhook).await?;
            let patch = UpdateWebhook {
                url,
                kinds: match (all_kinds, kinds.is_empty()) {
                    (true, _) => Some(Vec::new()),
                    (false, false) => Some(kinds),
                    (false, true) => None,
                },
                secret: secret_file.as_deref().map(read_secret).transpose()?,
                enabled: match (enable, disable) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
            };
            let w: Webhook = c
                .patch(&format!("/v1/webhooks/{id}"), &patch, if_match)
                .await?;
            show(&w)?;
        }
        WebhookCmd::Remove { webhook } => {
            let id = crate::cli::resolve::webhook(c, &webhook).await?;
            c.delete(&format!("/v1/webhooks/{id}"), None).await?;
            if !json {
                crate::out!("webhook {id} removed");
            }
        }
    }
    Ok(())
}
