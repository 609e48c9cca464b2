use serde::Deserialize;

use super::*;

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct Demo {
    name: String,
    table: Table,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct Table {
    size: u32,
    on: bool,
}

impl Default for Demo {
    fn default() -> Self {
        Self {
            name: "default".into(),
            table: Table::default(),
        }
    }
}

impl Default for Table {
    fn default() -> Self {
        Self { size: 1, on: false }
    }
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn loader() -> SettingsLoader {
    SettingsLoader::new("APP_")
        .ignore_prefix("APP_OTHER_")
        .ignore_var("APP_CONFIG")
        .defaults("table", Table::default())
}

fn file(contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.toml");
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

#[test]
fn defaults_then_the_file_then_the_environment() {
    let demo: Demo = loader().load(None, env(&[])).unwrap();
    assert_eq!(demo, Demo::default());

    let (_dir, path) = file("name = \"file\"\n[table]\nsize = 5\n");
    let demo: Demo = loader()
        .load(
            Some(&path),
            env(&[("APP_TABLE__ON", "true"), ("app_name", "env")]),
        )
        .unwrap();
    assert_eq!(demo.name, "env", "the environment wins, in any case");
    assert_eq!(demo.table.size, 5, "the file wins over defaults");
    assert!(demo.table.on);
}

#[test]
fn variables_of_other_processes_and_the_file_variable_are_ignored() {
    let demo: Demo = loader()
        .load(
            None,
            env(&[
                ("APP_OTHER_TABLE__SIZE", "9"),
                ("APP_CONFIG", "/etc/app.toml"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
    assert_eq!(demo, Demo::default());
}

#[test]
fn errors_name_the_file_or_the_key() {
    let err = loader()
        .load::<Demo>(Some(Path::new("/no/such/app.toml")), env(&[]))
        .unwrap_err();
    assert!(matches!(err, SettingsError::MissingFile(_)));
    assert!(err.to_string().contains("/no/such/app.toml"), "{err}");

    let err = loader()
        .load::<Demo>(None, env(&[("APP_TABLE__SIZE", "big")]))
        .unwrap_err();
    assert_eq!(err.key().as_deref(), Some("table.size"));
    assert!(err.to_string().contains("APP_"), "{err}");

    let err = loader()
        .load::<Demo>(None, env(&[("APP_TABEL__SIZE", "1")]))
        .unwrap_err();
    assert!(err.to_string().contains("tabel"), "{err}");
}

#[test]
fn invalid_settings_read_as_key_and_rule() {
    let err = InvalidSetting::check(false, "table.size", "must be greater than 0").unwrap_err();
    assert_eq!(err.to_string(), "table.size must be greater than 0");
    assert!(InvalidSetting::check(true, "table.size", "must be greater than 0").is_ok());
}

#[test]
fn an_env_only_key_in_the_file_is_refused_naming_its_variable() {
    let (_dir, path) = file("name = \"0123\"\n");
    let err = loader()
        .env_only(&["name"])
        .load::<Demo>(Some(&path), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("name may only be set in the environment (APP_NAME)"),
        "{err}"
    );
    assert!(!err.contains("0123"), "the value is never shown: {err}");
    let demo: Demo = loader()
        .env_only(&["name"])
        .load(None, env(&[("APP_NAME", "0123")]))
        .unwrap();
    assert_eq!(demo.name, "0123", "read as written");
}
