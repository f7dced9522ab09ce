//! `[accounts.NAME]`: further accounts beside the default one (`[api]` and
//! `[auth]`), each checked as those are, with its own budget. The Huawei
//! Cloud SDK's variables stand for the default account only.

use std::collections::BTreeMap;

use super::{SdkEnv, api, auth};
use crate::config::AccountConfig;
use crate::config::check::{Checker, is_word};
use crate::config::key::KeyPath;
use crate::config::raw::RawAccount;
use crate::watch::DEFAULT_ACCOUNT;

pub(super) fn check(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: BTreeMap<String, RawAccount>,
) -> BTreeMap<String, AccountConfig> {
    let mut out = BTreeMap::new();
    for (name, account) in raw {
        let k = key.f(&name);
        if name == DEFAULT_ACCOUNT {
            ck.err(
                &k,
                format!(
                    "{DEFAULT_ACCOUNT:?} is the account of [api] and [auth]; give this one another name"
                ),
            );
            continue;
        }
        if !is_word(&name) {
            ck.err(
                &k,
                format!("{name:?} is not an account name (letters, digits, '-' and '_' only)"),
            );
            continue;
        }
        let (raw_api, raw_auth) = account.split();
        let none = SdkEnv::default();
        let api = api::check(ck, &k, raw_api, &none);
        let auth = auth::check(ck, &k.f("auth"), raw_auth, &none);
        out.insert(name, AccountConfig { api, auth });
    }
    out
}
