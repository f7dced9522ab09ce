//! Durations as people write them (`"1h 30m"`): serialised that way for
//! `check`, and formatted that way in messages.

use std::time::Duration;

use jiff::fmt::friendly::SpanPrinter;
use jiff::fmt::serde::unsigned_duration::friendly::compact::required;

pub fn ser<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    required::serialize(d, s)
}

pub fn ser_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => required::serialize(d, s),
        None => s.serialize_none(),
    }
}

/// Formats a duration as it would be written.
pub fn human(d: Duration) -> String {
    SpanPrinter::new().unsigned_duration_to_string(&d)
}
