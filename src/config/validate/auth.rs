//! `[auth]`: the method, parsed once, and the keys each method reads.

use super::SdkEnv;
use crate::cloud::auth::TokenSource;
use crate::config::check::Checker;
use crate::config::key::KeyPath;
use crate::config::raw::RawAuth;
use crate::config::{AkSk, AuthConfig, PasswordAuth, TokenAuth};
use crate::secret::Secret;

/// `auth.method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Aksk,
    Token,
    Password,
    None,
}

impl Method {
    const ALL: [Method; 4] = [Method::Aksk, Method::Token, Method::Password, Method::None];

    fn as_str(self) -> &'static str {
        match self {
            Method::Aksk => "aksk",
            Method::Token => "token",
            Method::Password => "password",
            Method::None => "none",
        }
    }

    /// The method written, else AK/SK when AK/SK keys or SDK variables are
    /// present; `None` after reporting the problem.
    fn parse(ck: &mut Checker<'_>, key: &KeyPath, raw: &RawAuth, sdk: &SdkEnv) -> Option<Method> {
        let has_aksk_keys = raw.ak.is_some() || raw.sk.is_some() || raw.sk_file.is_some();
        let has_sdk_aksk = sdk.ak.is_some() || sdk.sk.is_some();
        match raw.method.as_deref().map(str::trim) {
            Some(text) => {
                let method = Method::ALL.into_iter().find(|m| m.as_str() == text);
                if method.is_none() {
                    ck.err(
                        &key.f("method"),
                        format!(
                            "unknown method {text:?}; expected \"aksk\", \"token\", \"password\" or \"none\""
                        ),
                    );
                }
                method
            }
            None if has_aksk_keys || has_sdk_aksk => Some(Method::Aksk),
            None => {
                ck.err(
                    &key.f("method"),
                    "not set, and no AK/SK found: set auth.method (\"aksk\", \"token\", \"password\" \
                     or \"none\"), or give auth.ak and auth.sk (or HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK)",
                );
                None
            }
        }
    }
}

pub(super) fn check(ck: &mut Checker<'_>, key: &KeyPath, raw: RawAuth, sdk: &SdkEnv) -> AuthConfig {
    let Some(method) = Method::parse(ck, key, &raw, sdk) else {
        return AuthConfig::None;
    };
    let why = format!("by auth.method = {:?}", method.as_str());
    // The keys each method reads; any other method's keys are mistakes.
    let owned: [(Method, &[(&str, bool)]); 3] = [
        (
            Method::Aksk,
            &[
                ("ak", raw.ak.is_some()),
                ("sk", raw.sk.is_some()),
                ("sk_file", raw.sk_file.is_some()),
                ("security_token", raw.security_token.is_some()),
                ("security_token_file", raw.security_token_file.is_some()),
            ],
        ),
        (
            Method::Token,
            &[
                ("token", raw.token.is_some()),
                ("token_file", raw.token_file.is_some()),
            ],
        ),
        (
            Method::Password,
            &[
                ("user", raw.user.is_some()),
                ("password", raw.password.is_some()),
                ("password_file", raw.password_file.is_some()),
                ("domain", raw.domain.is_some()),
                ("project_id", raw.project_id.is_some()),
            ],
        ),
    ];
    for (owner, keys) in owned {
        if owner != method {
            for (name, present) in keys {
                ck.unused(&key.f(name), *present, &why);
            }
        }
    }
    match method {
        Method::Aksk => aksk(ck, key, raw, sdk),
        Method::Token => token(ck, key, raw),
        Method::Password => password(ck, key, raw),
        Method::None => AuthConfig::None,
    }
}

fn aksk(ck: &mut Checker<'_>, key: &KeyPath, raw: RawAuth, sdk: &SdkEnv) -> AuthConfig {
    let ak_from_sdk = raw.ak.is_none() && sdk.ak.is_some();
    let ak = ck.non_empty(&key.f("ak"), raw.ak.or_else(|| sdk.ak.clone()));
    let sk = ck.secret(
        key,
        "sk",
        raw.sk,
        raw.sk_file,
        sdk.sk.as_deref().map(|v| ("HUAWEICLOUD_SDK_SK", v)),
    );
    // The SDK's temporary token belongs with the SDK's AK: pairing it with
    // an AK from the file would sign with mismatched credentials and fail
    // with a confusing 401.
    let sdk_token = sdk
        .security_token
        .as_deref()
        .filter(|_| ak_from_sdk)
        .map(|v| ("HUAWEICLOUD_SDK_SECURITY_TOKEN", v));
    let security_token = ck.secret(
        key,
        "security_token",
        raw.security_token,
        raw.security_token_file,
        sdk_token,
    );
    if ak.is_none() {
        ck.err(&key.f("ak"), "missing: set auth.ak or HUAWEICLOUD_SDK_AK");
    }
    if sk.is_none() && !ck.has_secret_problem(key, "sk") {
        ck.err(
            &key.f("sk"),
            "missing: set auth.sk, auth.sk_file or HUAWEICLOUD_SDK_SK",
        );
    }
    AuthConfig::Aksk(AkSk {
        ak: ak.unwrap_or_default(),
        sk: sk.unwrap_or_default(),
        security_token,
    })
}

fn token(ck: &mut Checker<'_>, key: &KeyPath, raw: RawAuth) -> AuthConfig {
    let source = match (raw.token, raw.token_file) {
        (Some(_), Some(_)) => {
            ck.err(
                &key.f("token"),
                "both `token` and `token_file` are set; keep one",
            );
            None
        }
        (Some(t), None) if t.is_empty() => {
            ck.err(&key.f("token"), "must not be empty");
            None
        }
        (Some(t), None) => {
            ck.inline_secret(key.f("token"));
            Some(TokenSource::Inline(t))
        }
        (None, Some(path)) => {
            // Kept as a path: it is re-read when it changes. Only check now
            // that it can be read at all.
            let path = match crate::config::check::secret_file_path(&path) {
                Ok(path) => path,
                Err(e) => {
                    ck.err(&key.f("token_file"), e);
                    return AuthConfig::Token(TokenAuth {
                        source: TokenSource::Inline(Secret::default()),
                    });
                }
            };
            match std::fs::File::open(&path) {
                Ok(_) => Some(TokenSource::File(path)),
                Err(e) => {
                    ck.err(
                        &key.f("token_file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            }
        }
        (None, None) => {
            ck.err(
                &key.f("token"),
                "missing: set auth.token or auth.token_file",
            );
            None
        }
    };
    AuthConfig::Token(TokenAuth {
        source: source.unwrap_or(TokenSource::Inline(Secret::default())),
    })
}

fn password(ck: &mut Checker<'_>, key: &KeyPath, raw: RawAuth) -> AuthConfig {
    let user = ck.non_empty(&key.f("user"), raw.user);
    if user.is_none() && !ck.has_problem(&key.f("user")) {
        ck.err(
            &key.f("user"),
            "missing: password auth needs an IAM user name",
        );
    }
    let password = ck.secret(key, "password", raw.password, raw.password_file, None);
    if password.is_none() && !ck.has_secret_problem(key, "password") {
        ck.err(
            &key.f("password"),
            "missing: set auth.password or auth.password_file",
        );
    }
    let domain = ck
        .non_empty(&key.f("domain"), raw.domain)
        .or_else(|| user.clone())
        .unwrap_or_default();
    let project_id = ck.non_empty(&key.f("project_id"), raw.project_id);
    AuthConfig::Password(PasswordAuth {
        user: user.unwrap_or_default(),
        password: password.unwrap_or_default(),
        domain,
        project_id,
    })
}
