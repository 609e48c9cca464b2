//! The one settings loader of the binaries: built-in defaults, then an optional TOML file,
//! then environment variables under one prefix (`__` separates levels, so
//! `CHAT_DATABASE__URL` is `database.url`). Each process names the variables under its prefix
//! that are not its settings (another process's prefix, the variable naming the file), so two
//! processes can share one environment.
//!
//! Seed aliases ([`SettingsLoader::alias`]): variables the seed designs' deployments set
//! (`JWT_SECRET`, `MAX_CONNECTIONS`, ...) name a setting too, below the project's own
//! variable: own variable > alias > file > defaults. [`SettingsLoader::alias_warnings`] says
//! when both are set and differ (naming the variables, never their values).
//!
//! The environment is a parameter: binaries pass [`process_env`], tests pass a list.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file named on the command line (or in `*_CONFIG`) is not there.
    #[error("config file {} does not exist", .0.display())]
    MissingFile(PathBuf),
    /// A value has the wrong type, or a key is unknown. The message names the key and where
    /// it was set (the file, or the environment).
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// The file sets a key that may only come from the environment (an encryption key): a
    /// file is easily copied, committed or backed up beside the data it protects.
    #[error("{key} may only be set in the environment ({variable}), never in the config file {}", .file.display())]
    EnvOnly {
        key: &'static str,
        variable: String,
        file: PathBuf,
    },
}

impl SettingsError {
    /// An invalid value that figment did not see (a variable read by hand).
    pub fn message(message: impl Into<String>) -> Self {
        Self::Invalid(Box::new(figment::Error::from(message.into())))
    }

    /// The dotted key of an invalid value (`chat.max_message_chars`), when one is to blame.
    pub fn key(&self) -> Option<String> {
        match self {
            Self::Invalid(err) if !err.path.is_empty() => Some(err.path.join(".")),
            _ => None,
        }
    }
}

/// A setting that parses but is out of its allowed range: `{key} {rule}`, e.g.
/// `chat.max_message_chars must be greater than 0`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {rule}")]
pub struct InvalidSetting {
    /// The dotted key, as written in the TOML file.
    pub key: &'static str,
    /// What the value must be.
    pub rule: String,
}

impl InvalidSetting {
    pub fn new(key: &'static str, rule: impl Into<String>) -> Self {
        Self {
            key,
            rule: rule.into(),
        }
    }

    /// `Ok` when `holds`, else this key with this rule.
    pub fn check(holds: bool, key: &'static str, rule: &str) -> Result<(), Self> {
        if holds {
            Ok(())
        } else {
            Err(Self::new(key, rule))
        }
    }
}

/// Where one process reads its settings from. Build it once per settings type.
#[derive(Debug, Clone)]
pub struct SettingsLoader {
    prefix: &'static str,
    ignored_prefixes: Vec<&'static str>,
    ignored_vars: Vec<&'static str>,
    verbatim: Vec<&'static str>,
    env_only: Vec<&'static str>,
    aliases: Vec<Alias>,
    defaults: Figment,
}

/// A variable outside the prefix that sets one key ([`SettingsLoader::alias`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alias {
    /// The variable, matched exactly (`JWT_SECRET`).
    pub name: &'static str,
    /// The dotted key it sets (`auth.secret`).
    pub key: &'static str,
}

impl SettingsLoader {
    /// Settings overridden by variables starting with `prefix` (`CHAT_`, `CHAT_EDGE_`).
    pub fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            ignored_prefixes: Vec::new(),
            ignored_vars: Vec::new(),
            verbatim: Vec::new(),
            env_only: Vec::new(),
            aliases: Vec::new(),
            defaults: Figment::new(),
        }
    }

    /// Variables starting with `prefix` belong to someone else (the core ignores `CHAT_EDGE_`).
    pub fn ignore_prefix(mut self, prefix: &'static str) -> Self {
        self.ignored_prefixes.push(prefix);
        self
    }

    /// One variable under the prefix that is not a setting (`CHAT_CONFIG`, the file's path).
    pub fn ignore_var(mut self, name: &'static str) -> Self {
        self.ignored_vars.push(name);
        self
    }

    /// Dotted keys whose variables are taken as written, never parsed as numbers, booleans or
    /// arrays: secrets and phone numbers keep their form (`0123`, `+15550100`).
    pub fn verbatim(mut self, keys: &[&'static str]) -> Self {
        self.verbatim.extend_from_slice(keys);
        self
    }

    /// Dotted keys a file may not set ([`SettingsError::EnvOnly`]); their variables are read
    /// as written, like [`SettingsLoader::verbatim`] keys.
    pub fn env_only(mut self, keys: &[&'static str]) -> Self {
        self.env_only.extend_from_slice(keys);
        self.verbatim.extend_from_slice(keys);
        self
    }

    /// The variable `name` sets `key` unless the prefixed variable of `key` is set too.
    pub fn alias(mut self, name: &'static str, key: &'static str) -> Self {
        self.aliases.push(Alias { name, key });
        self
    }

    /// The prefixed variable of a dotted key: `auth.secret` under `CHAT_` is
    /// `CHAT_AUTH__SECRET`.
    pub fn variable_of(&self, key: &str) -> String {
        format!(
            "{}{}",
            self.prefix,
            key.replace('.', "__").to_ascii_uppercase()
        )
    }

    /// Whether `file` (when given) or the prefixed variable of `env` names the dotted `key`:
    /// set on purpose, whatever its value (a default that is also written down counts). For
    /// settings that exclude each other (the edge's `core_url` and `core_urls`).
    pub fn sets(&self, file: Option<&Path>, env: &[(String, String)], key: &str) -> bool {
        let own = self.variable_of(key);
        env.iter()
            .any(|(name, _)| name.trim().eq_ignore_ascii_case(&own))
            || file.is_some_and(|path| Figment::from(Toml::file(path)).contains(key))
    }

    /// One line per alias set beside its key's own variable to a different value: the own
    /// variable wins. Names only, never values (they may be secrets).
    pub fn alias_warnings(&self, env: &[(String, String)]) -> Vec<String> {
        let value_of = |name: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        self.aliases
            .iter()
            .filter_map(|alias| {
                let own = self.variable_of(alias.key);
                match (value_of(alias.name), value_of(&own)) {
                    (Some(seed), Some(ours)) if seed != ours => Some(format!(
                        "{} and {own} are both set, to different values: {own} wins ({})",
                        alias.name, alias.key
                    )),
                    _ => None,
                }
            })
            .collect()
    }

    /// Defaults of the table at `key`. Fields a type's `#[serde(default)]` fills need none;
    /// this puts them into figment's view of the settings, so errors can point at them.
    pub fn defaults<T: Serialize>(mut self, key: &str, value: T) -> Self {
        self.defaults = self.defaults.merge(Serialized::default(key, value));
        self
    }

    /// Defaults < `file` (when given; it must exist) < the variables of `env` under the
    /// prefix. Fails naming the missing file, or the key and source of a bad value.
    pub fn load<T: DeserializeOwned>(
        &self,
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<T, SettingsError> {
        let mut figment = self.defaults.clone();
        if let Some(path) = file {
            if !path.exists() {
                return Err(SettingsError::MissingFile(path.to_path_buf()));
            }
            let file = Figment::from(Toml::file(path));
            if let Some(key) = self.env_only.iter().copied().find(|key| file.contains(key)) {
                return Err(SettingsError::EnvOnly {
                    key,
                    variable: self.variable_of(key),
                    file: path.to_path_buf(),
                });
            }
            figment = figment.merge(file);
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        figment
            .merge(self.aliased(&env))
            .merge(self.env(env))
            .extract()
            .map_err(|err| SettingsError::Invalid(Box::new(err)))
    }

    /// The aliases that are set, as a provider below the prefixed variables.
    fn aliased(&self, env: &[(String, String)]) -> EnvProvider {
        let mut values = Dict::new();
        for (name, value) in env {
            for alias in self.aliases.iter().filter(|a| a.name == name.trim()) {
                let path: Vec<String> = alias.key.split('.').map(str::to_owned).collect();
                insert(&mut values, &path, self.parse(alias.key, value.clone()));
            }
        }
        EnvProvider {
            name: "seed alias",
            values,
        }
    }

    /// Parsed as figment's own `Env` does (numbers, booleans, arrays, else a string), except
    /// for verbatim keys.
    fn parse(&self, key: &str, value: String) -> Value {
        if self.verbatim.contains(&key) {
            Value::from(value)
        } else {
            value
                .parse::<Value>()
                .unwrap_or_else(|never| match never {})
        }
    }

    fn env(&self, env: impl IntoIterator<Item = (String, String)>) -> EnvProvider {
        let mut values = Dict::new();
        for (name, value) in env {
            let name = name.trim();
            if !starts_with_ignore_case(name, self.prefix)
                || self
                    .ignored_prefixes
                    .iter()
                    .any(|p| starts_with_ignore_case(name, p))
                || self
                    .ignored_vars
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case(name))
            {
                continue;
            }
            let path: Vec<String> = name[self.prefix.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            if path.iter().any(String::is_empty) {
                continue;
            }
            let value = self.parse(&path.join("."), value);
            insert(&mut values, &path, value);
        }
        EnvProvider {
            name: self.prefix,
            values,
        }
    }
}

/// The process environment, for [`SettingsLoader::load`] (non-UTF-8 bytes replaced).
pub fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().map(|(name, value)| {
        (
            name.to_string_lossy().into_owned(),
            value.to_string_lossy().into_owned(),
        )
    })
}

fn starts_with_ignore_case(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.is_char_boundary(prefix.len())
        && name[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Puts `value` at `path`, making tables on the way; a later variable wins over an earlier
/// one for the same key.
fn insert(dict: &mut Dict, path: &[String], value: Value) {
    let [first, rest @ ..] = path else { return };
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    let entry = dict
        .entry(first.clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if !matches!(entry, Value::Dict(..)) {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert(inner, rest, value);
    }
}

/// The selected variables, as figment sees them (named like figment's `Env` in errors).
struct EnvProvider {
    /// The prefix, or "seed alias".
    name: &'static str,
    values: Dict,
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("`{}` environment variable(s)", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests;
