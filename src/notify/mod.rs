//! Delivery: the notifier kinds and what a delivery attempt means. Only this
//! module talks to receivers; the outbox (in `store`) decides when.

pub mod dingtalk;
pub mod discord;
pub mod dispatch;
pub mod email;
pub mod feishu;
pub mod http;
pub mod kinds;
pub mod log;
pub mod slack;
pub mod teams;
pub mod template;
pub mod text;
pub mod webhook;
pub mod wecom;

pub use template::{sample_group, sample_message};

use serde::Serialize;

use crate::retry::Verdict;
use crate::watch::event::Event;

/// One message to one notifier: a single event, or a group of them.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// The event id, or the group id: stable across retries and restarts,
    /// so receivers can de-duplicate (`webhook-id`).
    pub id: String,
    pub group: Option<GroupInfo>,
    pub events: Vec<Event>,
}

/// What a grouped message says about its group.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupInfo {
    pub id: String,
    /// The route's grouping key (`route` or a parent `job_id`).
    pub key: String,
    pub count: usize,
}

/// The outcome of one delivery attempt, with the receiver's own words.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub verdict: Verdict,
    pub answer: String,
}

/// Every notifier kind behind one interface (an enum: the set is ours).
#[derive(Debug, Clone)]
pub enum Notifier {
    Log(log::LogNotifier),
    Webhook(webhook::WebhookNotifier),
    Feishu(feishu::FeishuNotifier),
    DingTalk(dingtalk::DingTalkNotifier),
    WeCom(wecom::WeComNotifier),
    Slack(slack::SlackNotifier),
    Discord(discord::DiscordNotifier),
    Teams(teams::TeamsNotifier),
    Email(email::EmailNotifier),
}

impl Notifier {
    pub async fn send(&self, message: &Message) -> Attempt {
        match self {
            Notifier::Log(n) => n.send(message),
            Notifier::Webhook(n) => n.send(message).await,
            Notifier::Feishu(n) => n.send(message).await,
            Notifier::DingTalk(n) => n.send(message).await,
            Notifier::WeCom(n) => n.send(message).await,
            Notifier::Slack(n) => n.send(message).await,
            Notifier::Discord(n) => n.send(message).await,
            Notifier::Teams(n) => n.send(message).await,
            Notifier::Email(n) => n.send(message).await,
        }
    }
}
