//! The profile catalog: the built-in profiles (TOML files embedded from
//! `sandboxer-core/profiles/`, parsed by the same parser as user files) and
//! the user's `profiles/*.toml` in the config dir, which add profiles or
//! replace a built-in of the same id.
//!
//! ```
//! use sandboxer_core::profile::Catalog;
//!
//! let catalog = Catalog::builtin();
//! let canary = catalog.require("profile.sandbox-canary").unwrap();
//! assert_eq!(canary.routes[0].extension, "ext.canary");
//! assert!(catalog.require("profile.nope").is_err());
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::parse::{closest, diagnostics_error, parse_profile_located, Diagnostic};
use super::{Profile, ProfileSource};
use crate::{Error, Result};

/// The built-in profile files: (file name, text).
const BUILTIN: &[(&str, &str)] = &[
    (
        "sandbox-canary.toml",
        include_str!("../../profiles/sandbox-canary.toml"),
    ),
    (
        "compose-e2e.toml",
        include_str!("../../profiles/compose-e2e.toml"),
    ),
    (
        "vm-haskell-build.toml",
        include_str!("../../profiles/vm-haskell-build.toml"),
    ),
    ("burst.toml", include_str!("../../profiles/burst.toml")),
    ("saas.toml", include_str!("../../profiles/saas.toml")),
];

/// The profiles a request can name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Sorted by id by [`Catalog::builtin`] and [`Catalog::load`].
    pub profiles: Vec<Profile>,
}

impl Catalog {
    /// The built-in profiles only.
    pub fn builtin() -> Catalog {
        let mut profiles: Vec<Profile> = BUILTIN
            .iter()
            .map(|(name, text)| {
                let path = PathBuf::from(format!("<built-in>/{name}"));
                match parse_profile_located(&path, text, ProfileSource::Builtin) {
                    Ok((p, _)) => p,
                    // A unit test parses every built-in, so this is a bug.
                    Err(d) => panic!("built-in profile {name} is invalid:\n{d:#?}"),
                }
            })
            .collect();
        profiles.sort_by(|a, b| a.id.cmp(&b.id));
        Catalog { profiles }
    }

    /// The built-in profiles plus `config_dir/profiles/*.toml`, read in file
    /// name order (a missing folder means none). A user file replaces the
    /// built-in profile of the same id. Every problem in every file is
    /// reported at once in one `InvalidConfig` error; two user files with
    /// the same id is one of those problems.
    pub fn load(config_dir: &Path) -> Result<Catalog> {
        let builtin = Catalog::builtin();
        let dir = config_dir.join("profiles");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(builtin),
            Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
            let path = entry.path();
            let is_toml = path.extension().is_some_and(|x| x == "toml");
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            // Follows symlinks: a linked file counts, a folder does not.
            if is_toml && !hidden && path.is_file() {
                files.push(path);
            }
        }
        files.sort();

        let mut diagnostics = Vec::new();
        // id -> (file, line, column) of its first definition
        let mut seen: BTreeMap<String, (PathBuf, usize, usize)> = BTreeMap::new();
        let mut user = Vec::new();
        for path in files {
            let bytes = std::fs::read(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let Ok(text) = String::from_utf8(bytes) else {
                diagnostics.push(Diagnostic {
                    path,
                    line: 1,
                    column: 1,
                    message: "not UTF-8 text".to_string(),
                    hint: Some("profile files are TOML, which is UTF-8".to_string()),
                });
                continue;
            };
            let source = ProfileSource::File {
                path: path.clone(),
                overrides: false,
            };
            match parse_profile_located(&path, &text, source) {
                Err(d) => diagnostics.extend(d),
                Ok((mut profile, (line, column))) => {
                    if let Some((first, first_line, first_column)) = seen.get(&profile.id) {
                        diagnostics.push(Diagnostic {
                            path,
                            line,
                            column,
                            message: format!(
                                "profile `{}` is already defined in {}:{first_line}:{first_column}",
                                profile.id,
                                first.display()
                            ),
                            hint: Some(
                                "each profile id may be defined by one file; change the id or remove one of the files"
                                    .to_string(),
                            ),
                        });
                        continue;
                    }
                    seen.insert(profile.id.clone(), (path.clone(), line, column));
                    profile.source = ProfileSource::File {
                        path,
                        overrides: builtin.get(&profile.id).is_some(),
                    };
                    user.push(profile);
                }
            }
        }
        if !diagnostics.is_empty() {
            diagnostics
                .sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
            return Err(diagnostics_error(&diagnostics));
        }

        let mut profiles: Vec<Profile> = builtin
            .profiles
            .into_iter()
            .filter(|b| !seen.contains_key(&b.id))
            .collect();
        profiles.extend(user);
        profiles.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Catalog { profiles })
    }

    /// The profile called `id`.
    pub fn get(&self, id: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == id)
    }

    /// The profile an E2B `templateID` names: a profile id, an alias a
    /// profile declares, the id without its `profile.` prefix, or `base`
    /// (the E2B SDK's default template) for `default`. `None` when none
    /// matches.
    pub fn by_template(&self, name: &str, default: &str) -> Option<&Profile> {
        let name = if name == "base" { default } else { name };
        self.get(name)
            .or_else(|| {
                self.list()
                    .into_iter()
                    .find(|p| p.aliases.iter().any(|a| a == name))
            })
            .or_else(|| self.get(&format!("profile.{name}")))
    }

    /// Every profile, sorted by id.
    pub fn list(&self) -> Vec<&Profile> {
        let mut v: Vec<&Profile> = self.profiles.iter().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The profile called `id`, or a `NotFound` whose hint lists the known
    /// ids (and the likely one, for a typo or a missing `profile.`).
    pub fn require(&self, id: &str) -> Result<&Profile> {
        if let Some(p) = self.get(id) {
            return Ok(p);
        }
        let ids: Vec<&str> = self.list().into_iter().map(|p| p.id.as_str()).collect();
        let prefixed = format!("profile.{id}");
        let near = if ids.contains(&prefixed.as_str()) {
            Some(prefixed.as_str())
        } else {
            closest(id, &ids)
        };
        let known = format!("known profiles: {}", ids.join(", "));
        let hint = match near {
            Some(near) => format!("did you mean `{near}`? {known}"),
            None => known,
        };
        Err(Error::not_found(format!("unknown profile `{id}`")).with_hint(hint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credits::Micros;
    use crate::profile::Policy;
    use std::time::Duration;

    const USER: &str = r#"
id = "profile.compose-e2e"
version = 2
description = "my compose"
default_ttl = "1h"
max_ttl = "2h"

[[routes]]
extension = "ext.compose-ssh"
"#;

    fn write(dir: &Path, name: &str, text: &str) {
        let profiles = dir.join("profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        std::fs::write(profiles.join(name), text).unwrap();
    }

    #[test]
    fn templates_name_profiles_by_id_alias_short_id_or_base() {
        let c = Catalog::builtin();
        let canary = "profile.sandbox-canary";
        for name in ["profile.sandbox-canary", "canary", "sandbox-canary", "base"] {
            assert_eq!(
                c.by_template(name, canary).map(|p| p.id.as_str()),
                Some(canary),
                "{name}"
            );
        }
        assert_eq!(
            c.by_template("compose-e2e", canary).map(|p| p.id.as_str()),
            Some("profile.compose-e2e")
        );
        assert!(c.by_template("nope", canary).is_none());
    }

    #[test]
    fn every_builtin_parses_and_matches_the_catalog() {
        let c = Catalog::builtin();
        let ids: Vec<&str> = c.list().into_iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "profile.burst",
                "profile.compose-e2e",
                "profile.saas",
                "profile.sandbox-canary",
                "profile.vm-haskell-build"
            ]
        );
        for p in &c.profiles {
            assert_eq!(p.version, 1);
            assert_eq!(p.source, ProfileSource::Builtin);
            assert!(p.default_ttl <= p.max_ttl);
        }
        let h = |s: u64| Duration::from_secs(s * 3600);

        let canary = c.require("profile.sandbox-canary").unwrap();
        assert_eq!(
            canary.description,
            "Canary: deploys a tiny sandboxer agent to a host and reports host telemetry"
        );
        assert_eq!(canary.routes[0].extension, "ext.canary");
        assert!(canary.routes[0].placement.is_empty());
        assert_eq!(canary.routes[0].price_per_hour, Micros::ZERO);
        assert_eq!(
            (canary.default_ttl, canary.max_ttl),
            (Duration::from_secs(1800), h(24))
        );
        assert_eq!(canary.ready_timeout, Duration::from_secs(30));
        assert!(canary.inputs.is_empty());

        let compose = c.require("profile.compose-e2e").unwrap();
        assert!(compose.inputs["repo"].required);
        assert_eq!(
            compose.inputs["repo"].help,
            "local path to the consumer repository; it is copied to the host"
        );
        assert_eq!(compose.routes[0].placement, ["sandboxer01", "coulombcore"]);
        assert_eq!(
            serde_json::Value::Object(compose.routes[0].config.clone()),
            serde_json::json!({
                "compose_file": "docker-compose.e2e.yml",
                "fallback_compose_files": ["compose.yaml"],
                "stop_timeout": "5s"
            })
        );
        assert_eq!((compose.default_ttl, compose.max_ttl), (h(2), h(24)));
        assert_eq!(compose.ready_timeout, Duration::from_secs(300));

        let vm = c.require("profile.vm-haskell-build").unwrap();
        assert_eq!(vm.routes[0].extension, "ext.vm-packer");
        assert_eq!(vm.routes[0].config["memory_mb"], 2048);
        assert_eq!(vm.routes[0].config["accel"], "tcg");
        assert_eq!(
            (vm.default_ttl, vm.max_ttl, vm.ready_timeout),
            (h(4), h(24), Duration::from_secs(600))
        );

        let burst = c.require("profile.burst").unwrap();
        assert_eq!(burst.policy, Policy::Burst);
        let exts: Vec<&str> = burst.routes.iter().map(|r| r.extension.as_str()).collect();
        assert_eq!(exts, ["ext.compose-ssh", "ext.saas-stub"]);
        assert_eq!(burst.routes[0].config, compose.routes[0].config);
        assert_eq!(burst.routes[1].placement, ["saas-stub"]);
        assert_eq!(burst.routes[1].price_per_hour, Micros(600_000));
        assert_eq!(burst.routes[1].config["template"], "base");
        assert_eq!((burst.default_ttl, burst.max_ttl), (h(1), h(8)));

        let saas = c.require("profile.saas").unwrap();
        assert_eq!(saas.routes[0].price_per_hour, Micros(600_000));
        assert!(!saas.inputs["template"].required);
        assert_eq!(saas.inputs["template"].default.as_deref(), Some("base"));
        assert_eq!(saas.ready_timeout, Duration::from_secs(120));
    }

    #[test]
    fn require_hints_the_known_ids() {
        let c = Catalog::builtin();
        let e = c.require("profile.burts").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert!(e
            .hint()
            .unwrap()
            .starts_with("did you mean `profile.burst`? known profiles: profile.burst, "));
        let e = c.require("saas").unwrap_err();
        assert!(e
            .hint()
            .unwrap()
            .starts_with("did you mean `profile.saas`?"));
        let e = c.require("something-else").unwrap_err();
        assert!(e.hint().unwrap().starts_with("known profiles: "));
    }

    #[test]
    fn missing_folder_means_builtins_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Catalog::load(dir.path()).unwrap().profiles,
            Catalog::builtin().profiles
        );
    }

    #[test]
    fn user_file_overrides_a_builtin_and_adds_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "compose.toml", USER);
        write(
            dir.path(),
            "mine.toml",
            &USER.replace("profile.compose-e2e", "profile.mine"),
        );
        write(dir.path(), "notes.txt", "not a profile");
        let c = Catalog::load(dir.path()).unwrap();
        assert_eq!(c.profiles.len(), 6);
        let p = c.require("profile.compose-e2e").unwrap();
        assert_eq!(p.version, 2);
        assert_eq!(
            p.source,
            ProfileSource::File {
                path: dir.path().join("profiles/compose.toml"),
                overrides: true
            }
        );
        let mine = c.require("profile.mine").unwrap();
        assert!(matches!(
            mine.source,
            ProfileSource::File {
                overrides: false,
                ..
            }
        ));
        let ids: Vec<&str> = c.list().into_iter().map(|p| p.id.as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn problems_of_all_files_are_reported_together() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", USER);
        write(dir.path(), "b.toml", &format!("# same id\n{USER}"));
        write(
            dir.path(),
            "c.toml",
            &USER.replace("version = 2", "version = -1"),
        );
        let e = Catalog::load(dir.path()).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidConfig);
        let msg = e.message();
        let a = dir.path().join("profiles/a.toml");
        let b = dir.path().join("profiles/b.toml");
        let c = dir.path().join("profiles/c.toml");
        assert!(msg.starts_with("2 problems in 2 files\n"), "{msg}");
        assert!(
            msg.contains(&format!(
                "{}:3:6: profile `profile.compose-e2e` is already defined in {}:2:6",
                b.display(),
                a.display()
            )),
            "{msg}"
        );
        assert!(
            msg.contains(&format!(
                "{}:3:11: `version` must be a positive integer, not -1",
                c.display()
            )),
            "{msg}"
        );
    }
}
