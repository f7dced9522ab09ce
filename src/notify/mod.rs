//! Delivery: the notifier kinds and what a delivery attempt means. Only this
//! module talks to receivers; the outbox (in `store`) decides when.

pub mod dingtalk;
pub mod discord;
pub mod dispatch;
pub mod email;
pub mod feishu;
pub mod http;
pub mod log;
pub mod slack;
pub mod teams;
pub mod template;
pub mod text;
pub mod webhook;
pub mod wecom;

use std::time::Duration;

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

/// The default pace of a notifier kind, by its config name: at most `n`
/// messages per period, as its receiver documents. `None` for kinds with no
/// receiver-imposed limit (or unknown names).
pub fn default_rate(kind: &str) -> Option<(u32, Duration)> {
    match kind {
        "feishu" => Some(feishu::DEFAULT_RATE),
        "dingtalk" => Some(dingtalk::DEFAULT_RATE),
        "wecom" => Some(wecom::DEFAULT_RATE),
        "slack" => Some(slack::DEFAULT_RATE),
        "discord" => Some(discord::DEFAULT_RATE),
        "teams" => Some(teams::DEFAULT_RATE),
        _ => None,
    }
}

/// A realistic sample: a CREATE_SERVER sub-job that failed, as
/// `notify-test` sends it (and as templates are checked against).
pub fn sample_message() -> Message {
    let event: Event = serde_json::from_value(serde_json::json!({
        "event_id": "sample-0000000000000000000000000000",
        "kind": "changed",
        "project_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "job_type": "CREATE_SERVER",
        "sub_job_id": "3f1c2b9e-7a64-4e1b-9c1d-2f5e8a7b6c4d",
        "job_id": "8f2d6a3b-b1c9-4a61-b0e9-c7d4e5f60718",
        "resource_id": "a1a1245f-7c3d-4d2a-9b1e-1425af14c0de",
        "resource_name": "APS-20220902093902-AYOASWQDEJ",
        "from": "RUNNING",
        "to": "FAILED",
        "error_code": "WKS.00129901",
        "error_message": "The service is now unavailable to process the request.",
        "begin_time": "2022-03-07T10:40:43.858Z",
        "end_time": "2022-03-07T10:52:13.102Z",
        "observed_at": "2022-03-07T10:52:20Z"
    }))
    // A literal of our own shape; failing to read it is a bug here.
    .expect("the sample event is a valid event");
    Message {
        // Unique per run: receivers that de-duplicate must not drop a second test.
        id: format!("notify-test-{}", jiff::Timestamp::now().as_millisecond()),
        group: None,
        events: vec![event],
    }
}
