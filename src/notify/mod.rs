//! Delivery: the notifier kinds and what a delivery attempt means. Only this
//! module talks to receivers; the outbox (in `store`) decides when.

pub mod chat;
pub mod dispatch;
pub mod http;
pub mod kind;
pub mod kinds;
pub mod template;
pub mod text;

pub use template::{sample_group, sample_message};

use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;

use crate::retry::Verdict;
use crate::route::GroupKey;
use crate::watch::event::Event;

/// One message to one notifier: a single event, or a group of them.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// The event id, or the group id: stable across retries and restarts,
    /// so receivers can de-duplicate (`webhook-id`).
    pub id: String,
    pub group: Option<GroupInfo>,
    pub events: Vec<Event>,
    /// `notify-test`'s sample: every kind says so (title, subject, the
    /// webhook's `"test": true`) and none looks like an alert.
    pub test: bool,
}

/// What a grouped message says about its group.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupInfo {
    pub id: String,
    /// The route's grouping key (`route` or a parent `job_id`).
    pub key: String,
    pub count: usize,
    /// For a per-job group: the parent job's sub-jobs as jobwatch tracks
    /// them (all of them, whatever the route took), by status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobTally>,
}

/// A parent job's sub-jobs in the snapshot, by status: what a per-job
/// digest counts ("18/20 succeeded"), not only the events of the message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct JobTally {
    pub sub_jobs: u64,
    pub by_status: std::collections::BTreeMap<String, u64>,
}

impl GroupInfo {
    /// What `key` means: the route and, for a per-job group, the parent
    /// job (`key` is its stored text, which templates and bodies show).
    pub fn group_key(&self) -> GroupKey {
        let Ok(key) = self.key.parse();
        key
    }
}

/// The outcome of one delivery attempt, with the receiver's own words.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub verdict: Verdict,
    pub answer: String,
}

/// What every running notifier does: one delivery attempt of a message.
/// Each kind's notifier implements it in its own file; the chat kinds
/// share [`chat::ChatNotifier`], whose one send path serves them all.
pub trait Deliver: std::fmt::Debug + Send + Sync {
    fn deliver<'a>(&'a self, message: &'a Message) -> BoxedAttempt<'a>;
}

/// A delivery attempt in flight.
pub type BoxedAttempt<'a> = Pin<Box<dyn Future<Output = Attempt> + Send + 'a>>;

/// A running notifier of any kind. Cheap to clone: clones share it.
#[derive(Debug, Clone)]
pub struct Notifier(Arc<dyn Deliver>);

impl Notifier {
    pub fn new(notifier: impl Deliver + 'static) -> Notifier {
        Notifier(Arc::new(notifier))
    }

    pub async fn send(&self, message: &Message) -> Attempt {
        self.0.deliver(message).await
    }
}
