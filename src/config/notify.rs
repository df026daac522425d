//! The `[[notify]]` tables of the configuration: where notifications go and for which events.
//! A part of the schema (re-exported by `schema.rs`), in a file of its own; how they are sent is
//! in `crate::notify`. The rules that tie the keys to the kind are in `validate.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::rules;
use super::units::Duration;

/// A notification target: a webhook (`slack`, `discord`, `webhook`: `url`) or `email` (`smtp_url`,
/// `from`, `to`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// The payload format and transport.
    pub kind: NotifyKind,
    /// The webhook URL (slack, discord, webhook); always treated as secret.
    #[serde(
        default,
        deserialize_with = "rules::webhook_url",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    /// Email: the SMTP server, `smtp://host:port` (plain, for a local relay),
    /// `smtp+starttls://host:587` (STARTTLS required) or `smtps://host:465` (TLS). No user or
    /// password in it: see `username_env` and `password_env`.
    #[serde(
        default,
        deserialize_with = "rules::smtp_url",
        skip_serializing_if = "Option::is_none"
    )]
    pub smtp_url: Option<String>,
    /// Email: the sender, `deploy@example.com` or `Deploy Bot <deploy@example.com>`.
    #[serde(
        default,
        deserialize_with = "rules::mailbox",
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<String>,
    /// Email: the recipients (at least one).
    #[serde(
        default,
        deserialize_with = "rules::mailboxes",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub to: Vec<String>,
    /// Email: the environment variable holding the SMTP user name (with `password_env`).
    #[serde(
        default,
        deserialize_with = "rules::opt_env_name",
        skip_serializing_if = "Option::is_none"
    )]
    pub username_env: Option<String>,
    /// Email: the environment variable holding the SMTP password (secret: never printed).
    #[serde(
        default,
        deserialize_with = "rules::opt_env_name",
        skip_serializing_if = "Option::is_none"
    )]
    pub password_env: Option<String>,
    /// Events that trigger it. Default: all.
    #[serde(default = "default_notify_on")]
    pub on: Vec<NotifyEvent>,
    /// Time limit of one delivery attempt.
    #[serde(default = "default_notify_timeout")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    Slack,
    Discord,
    Webhook,
    Email,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifyEvent {
    Success,
    Failure,
    Rollback,
}

fn default_notify_on() -> Vec<NotifyEvent> {
    vec![
        NotifyEvent::Success,
        NotifyEvent::Failure,
        NotifyEvent::Rollback,
    ]
}
fn default_notify_timeout() -> Duration {
    Duration::from_secs(5)
}
