//! `[notifiers.NAME]`: the name here; the table is checked by its kind
//! (`notify::kinds`), which this layer only dispatches to.

use std::collections::BTreeMap;

use crate::config::check::{Checker, is_word};
use crate::config::key::KeyPath;
use crate::config::raw::RawNotifier;
use crate::notify::kinds::{self, NotifierConfig};
use crate::notify::template::TemplateSettings;

pub(super) fn check(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: BTreeMap<String, RawNotifier>,
    templates: &TemplateSettings,
) -> BTreeMap<String, NotifierConfig> {
    let mut out = BTreeMap::new();
    for (name, n) in raw {
        let k = key.f(&name);
        if !is_word(&name) {
            ck.err(
                &k,
                format!("notifier name {name:?} may only use letters, digits, '-' and '_'"),
            );
        }
        if let Some(notifier) = kinds::check(ck, &k, n, templates) {
            out.insert(name, notifier);
        }
    }
    out
}
