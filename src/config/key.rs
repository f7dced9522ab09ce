//! Key paths into the configuration (`routes[0].notify`): the one way a
//! problem names where it is, whether validation or figment found it.

use std::fmt;

/// The keys whose values are secrets wherever they appear (a webhook URL
/// holds its token): never echoed in an error, always strings.
pub const SECRET_LEAVES: [&str; 7] = [
    "ak",
    "sk",
    "security_token",
    "token",
    "password",
    "secret",
    "url",
];

/// Whether a key named `leaf` holds a secret ([`SECRET_LEAVES`]).
pub fn is_secret_leaf(leaf: &str) -> bool {
    SECRET_LEAVES.contains(&leaf)
}

/// A key path, e.g. `notifiers.chat.url` or `routes[2].to[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPath(Vec<Seg>);

/// One step of a [`KeyPath`]: a table key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    Field(String),
    Index(usize),
}

impl KeyPath {
    /// The file as a whole.
    pub fn root() -> KeyPath {
        KeyPath::default()
    }

    /// The key `name` inside this table.
    pub fn f(&self, name: &str) -> KeyPath {
        let mut k = self.clone();
        k.0.push(Seg::Field(name.to_owned()));
        k
    }

    /// The element `index` of this list.
    pub fn i(&self, index: usize) -> KeyPath {
        let mut k = self.clone();
        k.0.push(Seg::Index(index));
        k
    }

    /// From figment's path, where list indices are digit strings.
    pub fn from_figment(path: &[String]) -> KeyPath {
        KeyPath(
            path.iter()
                .map(|s| match s.parse::<usize>() {
                    Ok(i) if s.bytes().all(|b| b.is_ascii_digit()) => Seg::Index(i),
                    _ => Seg::Field(s.clone()),
                })
                .collect(),
        )
    }

    pub fn segments(&self) -> &[Seg] {
        &self.0
    }

    /// The segments as figment names them (indices as digits), for its
    /// metadata's interpolation of variable names.
    pub fn names(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|s| match s {
                Seg::Field(f) => f.clone(),
                Seg::Index(i) => i.to_string(),
            })
            .collect()
    }

    /// The last table key, e.g. the notifier's name in `notifiers.chat`.
    pub fn last_field(&self) -> Option<&str> {
        match self.0.last() {
            Some(Seg::Field(f)) => Some(f),
            _ => None,
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, s) in self.0.iter().enumerate() {
            match s {
                Seg::Field(name) if n == 0 => f.write_str(name)?,
                Seg::Field(name) => write!(f, ".{name}")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_display_with_indices() {
        let figment = ["routes", "0", "notify"].map(String::from);
        assert_eq!(
            KeyPath::from_figment(&figment).to_string(),
            "routes[0].notify"
        );
        assert_eq!(
            KeyPath::root().f("routes").i(2).f("to").i(0).to_string(),
            "routes[2].to[0]"
        );
        assert_eq!(
            KeyPath::from_figment(&figment),
            KeyPath::root().f("routes").i(0).f("notify")
        );
    }
}
