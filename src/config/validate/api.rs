//! `[api]`: region, endpoints, timeout and the account-wide request budget.

use std::time::Duration;

use url::Url;

use super::SdkEnv;
use crate::config::ApiConfig;
use crate::config::check::{Checker, did_you_mean};
use crate::config::key::KeyPath;
use crate::config::raw::RawApi;

pub(super) fn check(ck: &mut Checker<'_>, key: &KeyPath, raw: RawApi, sdk: &SdkEnv) -> ApiConfig {
    let region = match raw.region {
        Some(r) if r.trim().is_empty() => {
            ck.err(&key.f("region"), "must not be empty");
            "cn-north-4".to_owned()
        }
        Some(r) => r.trim().to_owned(),
        None => "cn-north-4".to_owned(),
    };
    let placeholder = || Url::parse("http://127.0.0.1/").expect("a valid literal URL");
    let endpoint = match &raw.endpoint {
        Some(text) => ck
            .http_url(&key.f("endpoint"), text, true)
            .unwrap_or_else(placeholder),
        None => match crate::cloud::region::endpoint_for(&region) {
            Some(e) => Url::parse(e).unwrap_or_else(|_| placeholder()),
            None => {
                let known = crate::cloud::region::REGIONS.iter().map(|(r, _)| *r);
                ck.err(
                    &key.f("region"),
                    format!(
                        "unknown region {region:?}{}; known: {}; or set the endpoint to the \
                         Workspace endpoint of that region (e.g. \"https://workspace.{region}.myhuaweicloud.com\")",
                        did_you_mean(&region, known.clone()),
                        known.collect::<Vec<_>>().join(", "),
                    ),
                );
                placeholder()
            }
        },
    };
    let timeout = ck.duration(
        &key.f("timeout"),
        raw.timeout.as_ref(),
        Duration::from_secs(10),
        Duration::from_millis(1),
    );
    let max_requests_per_minute = match raw.max_requests_per_minute {
        None => 100,
        Some(n) if (1..=100_000).contains(&n) => n as u32,
        Some(n) => {
            ck.err(
                &key.f("max_requests_per_minute"),
                format!("{n} is out of range: must be between 1 and 100000"),
            );
            100
        }
    };
    let iam_endpoint = match (&raw.iam_endpoint, &sdk.iam_endpoint) {
        (Some(text), _) => ck.http_url(&key.f("iam_endpoint"), text, true),
        (None, Some(text)) => match Url::parse(text.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                ck.err_from_env(
                    &key.f("iam_endpoint"),
                    "HUAWEICLOUD_SDK_IAM_ENDPOINT",
                    format!("{text:?} is not an http(s) URL"),
                );
                None
            }
        },
        (None, None) => Url::parse(&crate::cloud::region::iam_endpoint_for(&region)).ok(),
    }
    .unwrap_or_else(placeholder);
    ApiConfig {
        region,
        endpoint,
        timeout,
        max_requests_per_minute,
        iam_endpoint,
    }
}
