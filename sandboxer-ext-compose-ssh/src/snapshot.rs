//! Snapshots of a compose stack: every service's container committed to an
//! image (`sandboxer/SNAP:SERVICE`) and every named volume of the project
//! archived (`DATA/compose-snapshots/SNAP/volumes/NAME.tar`, made under
//! `.SNAP.partial` and renamed once whole); and the restore: a new project
//! whose volumes are filled from the archives before `up`, its services on
//! the committed images. The scripts are built from data (every value
//! quoted); the plan is read from `docker inspect`. Pure except where the
//! extension runs them.

use sandboxer_core::snapshot::is_snapshot_id;
use sandboxer_core::transport::{shell_quote, Transport, Utf8Path, Utf8PathBuf};
use sandboxer_core::{Error, Result};
use serde_json::{json, Value};

use crate::SANDBOX_LABEL;

/// The image repository of snapshot `snap`: `sandboxer/SNAP`.
pub(crate) fn image_repo(snap: &str) -> String {
    format!("sandboxer/{snap}")
}

/// `DATA/compose-snapshots/SNAP`, for a well-formed snapshot id only.
pub(crate) fn snapshot_dir(t: &dyn Transport, snap: &str) -> Result<Utf8PathBuf> {
    if !is_snapshot_id(snap) {
        return Err(Error::invalid_input(format!(
            "`{snap}` is not a snapshot id"
        )));
    }
    Ok(snapshots_root(t).join(snap))
}

pub(crate) fn snapshots_root(t: &dyn Transport) -> Utf8PathBuf {
    t.data_dir().join("compose-snapshots")
}

pub(crate) use sandboxer_core::snapshot::partial_dir;

/// A name docker takes as an image tag and a file name: compose service
/// and volume names are `[a-zA-Z0-9._-]`.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// What a snapshot takes, from `docker inspect` of the stack's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// (container id, service, paused)
    pub containers: Vec<(String, String, bool)>,
    /// (container id, mount destination, volume name in the compose file)
    pub volumes: Vec<(String, String, String)>,
}

/// The plan from `docker inspect`'s JSON array; an error names what cannot
/// be saved.
pub(crate) fn plan(inspect: &str, project: &str) -> std::result::Result<Plan, String> {
    let all: Vec<Value> = serde_json::from_str(inspect)
        .map_err(|e| format!("`docker inspect` printed no JSON array: {e}"))?;
    let mut plan = Plan {
        containers: Vec::new(),
        volumes: Vec::new(),
    };
    let prefix = format!("{project}_");
    for c in &all {
        let id = c["Id"].as_str().unwrap_or_default().to_string();
        let service = c
            .pointer("/Config/Labels/com.docker.compose.service")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !plain(&service) {
            return Err(format!(
                "container {id} has no compose service label (or one that cannot tag an image): `{service}`"
            ));
        }
        if plan.containers.iter().any(|(_, s, _)| *s == service) {
            return Err(format!(
                "service `{service}` runs more than one container; a snapshot keeps one per service"
            ));
        }
        let paused = c.pointer("/State/Paused").and_then(Value::as_bool) == Some(true);
        plan.containers.push((id.clone(), service, paused));
        for m in c["Mounts"].as_array().into_iter().flatten() {
            if m["Type"].as_str() != Some("volume") {
                continue;
            }
            let (Some(name), Some(dest)) = (m["Name"].as_str(), m["Destination"].as_str()) else {
                continue;
            };
            // The project's named volumes are `PROJECT_NAME`; anonymous
            // ones (a hash) are not kept, as compose would not reuse them.
            let Some(short) = name.strip_prefix(&prefix) else {
                continue;
            };
            if !plain(short) || plan.volumes.iter().any(|(_, _, v)| v == short) {
                continue;
            }
            plan.volumes
                .push((id.clone(), dest.to_string(), short.to_string()));
        }
    }
    if plan.containers.is_empty() {
        return Err("no container is labelled with the sandbox id".to_string());
    }
    Ok(plan)
}

/// Commit every container, archive every volume into the partial folder,
/// rename it to `dir` and print the bytes kept (archives plus images). On
/// any failure the partial folder and the images are removed.
pub(crate) fn snapshot_script(plan: &Plan, snap: &str, dir: &Utf8Path) -> String {
    let repo = image_repo(snap);
    let mut s = format!(
        r#"D={d}
T={t}
R={r}
_fail() {{ rm -rf "$T"; _i=$(docker images -q "$R" | sort -u); [ -z "$_i" ] || docker rmi -f $_i >/dev/null 2>&1; exit 1; }}
rm -rf "$T" && mkdir -p "$T/volumes" || exit 1
"#,
        d = shell_quote(dir.as_str()),
        t = shell_quote(partial_dir(dir).as_str()),
        r = shell_quote(&repo),
    );
    for (id, service, paused) in &plan.containers {
        // A running container is paused while it is committed (docker's
        // default); a paused one already is.
        let pause = if *paused { " --pause=false" } else { "" };
        s.push_str(&format!(
            "docker commit{pause} {c} \"$R\":{svc} >/dev/null || _fail\n",
            c = shell_quote(id),
            svc = shell_quote(service)
        ));
    }
    for (id, dest, name) in &plan.volumes {
        s.push_str(&format!(
            "docker cp {src} - > \"$T/volumes/\"{n}.tar || _fail\n",
            src = shell_quote(&format!("{id}:{dest}/.")),
            n = shell_quote(name),
        ));
    }
    s.push_str(
        r#"mv "$T" "$D" || _fail
_b=$(du -sk "$D" | cut -f1)
_i=0
for _s in $(docker image inspect -f '{{.Size}}' $(docker images -q "$R" | sort -u) 2>/dev/null); do _i=$((_i + _s)); done
echo $((_b * 1024 + _i))
"#,
    );
    s
}

/// The snapshot's handle: where it is and what it holds.
pub(crate) fn handle(plan: &Plan, snap: &str, dir: &Utf8Path) -> Value {
    json!({
        "dir": dir,
        "image": image_repo(snap),
        "services": plan.containers.iter().map(|(_, s, _)| s).collect::<Vec<_>>(),
        "volumes": plan.volumes.iter().map(|(_, _, v)| v).collect::<Vec<_>>(),
    })
}

/// What a restore reads from a snapshot's handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Saved {
    pub dir: String,
    pub image: String,
    pub services: Vec<String>,
    pub volumes: Vec<String>,
}

impl Saved {
    /// The handle of snapshot `snap` as written by [`handle`]; anything else
    /// (a handle of another extension, a forged one) is refused.
    pub(crate) fn parse(t: &dyn Transport, snap: &str, h: &Value) -> Result<Saved> {
        let bad = || {
            Error::not_found(format!(
                "snapshot {snap} is not a compose snapshot on {}",
                t.host()
            ))
        };
        let dir = snapshot_dir(t, snap)?;
        let list = |k: &str| -> Option<Vec<String>> {
            h.get(k)?
                .as_array()?
                .iter()
                .map(|v| v.as_str().filter(|s| plain(s)).map(str::to_string))
                .collect()
        };
        if h.get("dir").and_then(Value::as_str) != Some(dir.as_str())
            || h.get("image").and_then(Value::as_str) != Some(image_repo(snap).as_str())
        {
            return Err(bad());
        }
        Ok(Saved {
            dir: dir.into_string(),
            image: image_repo(snap),
            services: list("services").ok_or_else(bad)?,
            volumes: list("volumes").ok_or_else(bad)?,
        })
    }

    /// The services of the override: each on its committed image.
    pub(crate) fn images(&self) -> Vec<(String, String)> {
        self.services
            .iter()
            .map(|s| (s.clone(), format!("{}:{s}", self.image)))
            .collect()
    }
}

/// Make the new project's volumes (labelled as compose labels its own) and
/// fill each from its archive, through a created (never started) container
/// of a committed image. Exit 46: the snapshot is not on the host.
pub(crate) fn restore_volumes_script(saved: &Saved, project: &str) -> String {
    let first = saved
        .services
        .first()
        .map(|s| format!("{}:{s}", saved.image))
        .unwrap_or_default();
    let mut s = format!(
        "D={d}\n[ -d \"$D\" ] || exit {EXIT_NO_SNAPSHOT}\n",
        d = shell_quote(&saved.dir)
    );
    for v in &saved.volumes {
        let vol = format!("{project}_{v}");
        s.push_str(&format!(
            r#"docker volume create --label com.docker.compose.project={p} --label com.docker.compose.volume={n} --label {l}={p} {vol} >/dev/null || exit 1
_h=$(docker create -v {vol}:/sandboxer-restore {img}) || exit 1
docker cp - "$_h":/sandboxer-restore < "$D/volumes/"{n}.tar || {{ docker rm -f "$_h" >/dev/null; exit 1; }}
docker rm -f "$_h" >/dev/null || exit 1
"#,
            p = shell_quote(project),
            n = shell_quote(v),
            l = SANDBOX_LABEL,
            vol = shell_quote(&vol),
            img = shell_quote(&first),
        ));
    }
    s
}

/// Exit status of the restore script when the snapshot's folder is gone.
pub(crate) const EXIT_NO_SNAPSHOT: i32 = 46;

/// Remove the snapshot's folder, its partial folder and its images.
pub(crate) fn delete_script(snap: &str, dir: &Utf8Path) -> String {
    format!(
        r#"rm -rf {d} {t} || exit 1
if command -v docker >/dev/null 2>&1; then
  _i=$(docker images -q {r} | sort -u) || exit 1
  [ -z "$_i" ] || docker rmi -f $_i >/dev/null || exit 1
fi
"#,
        d = shell_quote(dir.as_str()),
        t = shell_quote(partial_dir(dir).as_str()),
        r = shell_quote(&image_repo(snap)),
    )
}

/// One `SNAP whole|partial|image` line per snapshot folder, partial folder
/// and image repository of a snapshot.
pub(crate) fn list_script(root: &Utf8Path) -> String {
    format!(
        r#"if command -v docker >/dev/null 2>&1; then
  docker images --format '{{{{.Repository}}}}' | sed -n 's|^sandboxer/\(snap-[a-z0-9]*\)$|\1 image|p' | sort -u
fi
{folders}exit 0
"#,
        folders = sandboxer_core::snapshot::folders_listing(root),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSPECT: &str = r#"[
      {"Id": "c1", "State": {"Paused": true},
       "Config": {"Labels": {"com.docker.compose.service": "web"}},
       "Mounts": [{"Type": "volume", "Name": "sbx-a_data", "Destination": "/data"},
                  {"Type": "volume", "Name": "0123abcd", "Destination": "/anon"},
                  {"Type": "bind", "Source": "/x", "Destination": "/x"}]},
      {"Id": "c2", "State": {"Paused": false},
       "Config": {"Labels": {"com.docker.compose.service": "db"}},
       "Mounts": [{"Type": "volume", "Name": "sbx-a_data", "Destination": "/var/d"}]}
    ]"#;

    #[test]
    fn the_plan_keeps_one_image_per_service_and_each_named_volume_once() {
        let p = plan(INSPECT, "sbx-a").unwrap();
        assert_eq!(
            p.containers,
            vec![
                ("c1".to_string(), "web".to_string(), true),
                ("c2".to_string(), "db".to_string(), false)
            ]
        );
        assert_eq!(
            p.volumes,
            vec![("c1".to_string(), "/data".to_string(), "data".to_string())]
        );
        let bad = INSPECT.replace("\"db\"", "\"web\"");
        assert!(plan(&bad, "sbx-a")
            .unwrap_err()
            .contains("more than one container"));
        let bad = INSPECT.replace("\"db\"", "\"$(x)\"");
        assert!(plan(&bad, "sbx-a").unwrap_err().contains("cannot tag"));
        assert!(plan("[]", "sbx-a").is_err());
    }

    #[test]
    fn scripts_quote_and_pause_only_what_runs() {
        let p = plan(INSPECT, "sbx-a").unwrap();
        let dir = Utf8Path::new("/d d/compose-snapshots/snap-abc");
        let s = snapshot_script(&p, "snap-abc", dir);
        assert!(s.contains("D='/d d/compose-snapshots/snap-abc'\nT='/d d/compose-snapshots/.snap-abc.partial'\nR=sandboxer/snap-abc\n"), "{s}");
        assert!(
            s.contains("docker commit --pause=false c1 \"$R\":web"),
            "{s}"
        );
        assert!(s.contains("docker commit c2 \"$R\":db"), "{s}");
        assert!(
            s.contains("docker cp c1:/data/. - > \"$T/volumes/\"data.tar || _fail"),
            "{s}"
        );
        let d = delete_script("snap-abc", dir);
        assert!(d.starts_with("rm -rf '/d d/compose-snapshots/snap-abc' '/d d/compose-snapshots/.snap-abc.partial'"), "{d}");
    }
}
