//! The shell scripts run on the host, built from data. Every value (paths,
//! ids, file names, environment values) goes through `shell_quote`; the
//! only unquoted expansions are the compose command (one of two literals)
//! and lists of ids docker printed. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sandboxer_core::transport::shell_quote;

use crate::{ComposeVersion, SANDBOX_ENV, SANDBOX_LABEL};

/// The label compose (v1 and v2) puts on every container: the folder of
/// the project's first compose file.
pub(crate) const WORKING_DIR_LABEL: &str = "com.docker.compose.project.working_dir";

/// Exit status of the upload script when the work folder already exists.
pub(crate) const EXIT_WORK_EXISTS: i32 = 98;
/// Exit status of [`containers_step_script`] when no container is
/// labelled with the sandbox id.
pub(crate) const EXIT_NO_CONTAINERS: i32 = 44;

/// `docker VERB` (`pause`, `unpause`, `stop`, `start`) of the sandbox's
/// containers in the state the verb applies to (running, paused, running,
/// exited); none in that state is fine, none at all is
/// [`EXIT_NO_CONTAINERS`].
pub(crate) fn containers_step_script(layout: &Layout, verb: &str, stop_timeout: u64) -> String {
    let (from, args) = match verb {
        "pause" => ("running", "pause".to_string()),
        "unpause" => ("paused", "unpause".to_string()),
        "stop" => ("running", format!("stop -t {stop_timeout}")),
        _ => ("exited", "start".to_string()),
    };
    format!(
        r#"_all=$(docker ps -aq --filter {filter}) || exit 1
[ -n "$_all" ] || exit {EXIT_NO_CONTAINERS}
_c=$(docker ps -aq --filter {filter} --filter status={from}) || exit 1
[ -z "$_c" ] || docker {args} $_c >/dev/null
"#,
        filter = shell_quote(&format!("label={SANDBOX_LABEL}={}", layout.id)),
    )
}

/// Where one sandbox lives on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// `DATA/work`.
    pub work_root: String,
    /// `DATA/work/ID`.
    pub work_dir: String,
    /// The compose project name (the id).
    pub project: String,
    /// The sandbox id.
    pub id: String,
}

/// One compose command line for a sandbox's stack.
#[derive(Debug, Clone)]
pub(crate) struct Compose<'a> {
    pub layout: &'a Layout,
    pub version: ComposeVersion,
    /// `-f` files, relative to the work folder.
    pub files: &'a [String],
    pub env: &'a BTreeMap<String, String>,
}

impl Compose<'_> {
    /// The script that runs `compose -p P -f ... ARGS` in the work folder
    /// with the sandbox id (and the configured variables) in the
    /// environment, and how to show the command to people (no environment
    /// values: they may be secrets).
    pub fn script(&self, args: &[&str]) -> (String, String) {
        let mut words = vec![self.version.command().to_string()];
        words.push("-p".into());
        words.push(shell_quote(&self.layout.project));
        for f in self.files {
            words.push("-f".into());
            words.push(shell_quote(f));
        }
        words.extend(args.iter().map(|a| shell_quote(a)));
        let command = words.join(" ");
        let script = format!(
            "cd {w} || exit 1\n{env}{command}\n",
            w = shell_quote(&self.layout.work_dir),
            env = env_prefix(&self.layout.id, self.env),
        );
        (script, command)
    }
}

/// `SANDBOXER_SANDBOX_ID=ID K=V ... ` (quoted), to put before a command.
fn env_prefix(id: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = format!("{SANDBOX_ENV}={} ", shell_quote(id));
    for (k, v) in env {
        // Names were checked ([A-Za-z_][A-Za-z0-9_]*); values are data.
        let _ = write!(out, "{k}={} ", shell_quote(v));
    }
    out
}

/// Prints `v2`, `v1` or `none`: which compose the host has. v1 is found by
/// its presence on PATH only: running `docker-compose version` costs half a
/// second, and a broken v1 shows itself at the first real command.
pub(crate) const DETECT_SCRIPT: &str = "if docker compose version >/dev/null 2>&1; then echo v2
elif command -v docker-compose >/dev/null 2>&1; then echo v1
else echo none; fi
";

/// Make the work folder (it must not exist) and unpack the tar on stdin
/// into it, without restoring owners.
pub(crate) fn upload_script(layout: &Layout) -> String {
    format!(
        r#"W={w}
mkdir -p {root} || exit 1
mkdir "$W" 2>/dev/null || {{ [ -e "$W" ] && exit {EXIT_WORK_EXISTS}; mkdir "$W" || exit 1; }}
tar -x -o -f - -C "$W"
"#,
        w = shell_quote(&layout.work_dir),
        root = shell_quote(&layout.work_root),
    )
}

/// Whether the work folder exists (`W1`/`W0` on the first line), then
/// `docker inspect` of every container labelled with the sandbox id (a
/// JSON array; nothing when there is none).
pub(crate) fn look_script(layout: &Layout) -> String {
    format!(
        r#"if [ -d {w} ]; then echo W1; else echo W0; fi
_c=$(docker ps -aq --filter {filter}) || exit 1
[ -n "$_c" ] || exit 0
docker inspect $_c
"#,
        w = shell_quote(&layout.work_dir),
        filter = shell_quote(&format!("label={SANDBOX_LABEL}={}", layout.id)),
    )
}

/// The last lines of a container's output (stdout and stderr).
pub(crate) fn logs_script(container: &str, lines: usize) -> String {
    format!(
        "docker logs --tail {lines} {} 2>&1\n",
        shell_quote(container)
    )
}

/// Tear a sandbox down: `compose down -v --remove-orphans -t N` when the
/// work folder and its compose file are there, then remove whatever is
/// still labelled with the sandbox id or its project (containers with their
/// anonymous volumes, networks, volumes), then the work folder. Exits 0
/// only when no container is labelled with the id and the folder is gone.
/// `version` `None`: detect compose on the host (a lost handle).
/// `candidates`: the compose file candidates with the override file that
/// goes with each, relative to the work folder.
pub(crate) fn teardown_script(
    layout: &Layout,
    version: Option<ComposeVersion>,
    candidates: &[(String, String)],
    stop_timeout_secs: u64,
    env: &BTreeMap<String, String>,
) -> String {
    let mut s = format!(
        "W={w}\nP={p}\nID={id}\n",
        w = shell_quote(&layout.work_dir),
        p = shell_quote(&layout.project),
        id = shell_quote(&layout.id),
    );
    s.push_str(
        r#"case "$W" in */work/sbx-*) ;; *) echo "refusing to remove $W" >&2; exit 3 ;; esac
_docker=0
command -v docker >/dev/null 2>&1 && _docker=1
if [ -d "$W" ] && [ "$_docker" = 1 ]; then
"#,
    );
    match version {
        Some(v) => {
            let _ = writeln!(s, "  C={}", shell_quote(v.command()));
        }
        None => s.push_str(
            "  C=\n  if docker compose version >/dev/null 2>&1; then C='docker compose'\n  elif command -v docker-compose >/dev/null 2>&1; then C=docker-compose; fi\n",
        ),
    }
    s.push_str("  set --\n");
    for (i, (file, over)) in candidates.iter().enumerate() {
        let (f, o) = (shell_quote(file), shell_quote(over));
        let _ = writeln!(
            s,
            "  {kw} [ -f \"$W\"/{f} ]; then set -- -f {f}; [ -f \"$W\"/{o} ] && set -- \"$@\" -f {o}",
            kw = if i == 0 { "if" } else { "elif" },
        );
    }
    if !candidates.is_empty() {
        s.push_str("  fi\n");
    }
    let _ = write!(
        s,
        r#"  if [ -n "$C" ] && [ $# -gt 0 ]; then
    _out=$(cd "$W" && {env}$C -p "$P" "$@" down -v --remove-orphans -t {stop_timeout_secs} 2>&1) ||
      printf 'compose down failed (the label sweep follows): %s\n' "$_out" >&2
  fi
fi
if [ "$_docker" = 1 ]; then
  _c1=$(docker ps -aq --filter "label={SANDBOX_LABEL}=$ID") || exit 1
  _c2=$(docker ps -aq --filter "label=com.docker.compose.project=$P") || exit 1
  _c=$(printf '%s\n' $_c1 $_c2 | sort -u)
  [ -z "$_c" ] || docker rm -f -v $_c >/dev/null
  _n=$(docker network ls -q --filter "label=com.docker.compose.project=$P") || exit 1
  [ -z "$_n" ] || docker network rm $_n >/dev/null
  _v=$(docker volume ls -q --filter "label=com.docker.compose.project=$P") || exit 1
  [ -z "$_v" ] || docker volume rm -f $_v >/dev/null
fi
rm -rf "$W"
if [ "$_docker" = 1 ]; then
  _left=$(docker ps -aq --filter "label={SANDBOX_LABEL}=$ID") || exit 1
  [ -z "$_left" ] || {{ echo "containers still labelled $ID:" $_left >&2; exit 1; }}
fi
[ ! -e "$W" ] || {{ echo "$W is still there" >&2; exit 1; }}
"#,
        env = env_prefix_vars(env),
    );
    s
}

/// Like [`env_prefix`], with the id from `$ID` of the teardown script.
fn env_prefix_vars(env: &BTreeMap<String, String>) -> String {
    let mut out = format!("{SANDBOX_ENV}=\"$ID\" ");
    for (k, v) in env {
        let _ = write!(out, "{k}={} ", shell_quote(v));
    }
    out
}

/// One line per container labelled with a sandbox id
/// (`ID<TAB>PROJECT<TAB>STATUS<TAB>COMPOSE WORKING DIR`), then `--`, then
/// one line per work folder.
pub(crate) fn list_script(work_root: &str) -> String {
    format!(
        r#"if command -v docker >/dev/null 2>&1; then
  docker ps -a --filter label={SANDBOX_LABEL} --format '{{{{.Label "{SANDBOX_LABEL}"}}}}	{{{{.Label "com.docker.compose.project"}}}}	{{{{.Status}}}}	{{{{.Label "{WORKING_DIR_LABEL}"}}}}' || exit 1
fi
echo --
cd {root} 2>/dev/null || exit 0
for _d in sbx-*; do [ -d "$_d" ] && echo "$_d"; done
exit 0
"#,
        root = shell_quote(work_root),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            work_root: "/data $(touch x)/work".into(),
            work_dir: "/data $(touch x)/work/sbx-abc".into(),
            project: "sbx-abc".into(),
            id: "sbx-abc".into(),
        }
    }

    #[test]
    fn compose_script_quotes_files_and_env_and_hides_values() {
        let l = layout();
        let files = vec!["e2e/my stack.yml".to_string(), "e2e/.o.yml".to_string()];
        let env = BTreeMap::from([("TOKEN".to_string(), "s3cret; rm -rf /".to_string())]);
        let c = Compose {
            layout: &l,
            version: ComposeVersion::V1,
            files: &files,
            env: &env,
        };
        let (script, shown) = c.script(&["up", "-d"]);
        assert_eq!(
            script,
            "cd '/data $(touch x)/work/sbx-abc' || exit 1\nSANDBOXER_SANDBOX_ID=sbx-abc TOKEN='s3cret; rm -rf /' docker-compose -p sbx-abc -f 'e2e/my stack.yml' -f e2e/.o.yml up -d\n"
        );
        assert_eq!(
            shown,
            "docker-compose -p sbx-abc -f 'e2e/my stack.yml' -f e2e/.o.yml up -d"
        );
        let c = Compose {
            version: ComposeVersion::V2,
            ..c
        };
        assert!(c.script(&["config"]).1.starts_with("docker compose -p "));
    }

    #[test]
    fn upload_and_look_scripts_quote_the_paths() {
        let s = upload_script(&layout());
        assert!(
            s.starts_with("W='/data $(touch x)/work/sbx-abc'\nmkdir -p '/data $(touch x)/work' "),
            "{s}"
        );
        let s = look_script(&layout());
        assert!(s.contains("[ -d '/data $(touch x)/work/sbx-abc' ]"), "{s}");
        assert!(
            s.contains("--filter label=sandboxer.sandbox_id=sbx-abc)"),
            "{s}"
        );
        assert_eq!(
            logs_script("abc'; x", 20),
            "docker logs --tail 20 'abc'\\''; x' 2>&1\n"
        );
    }

    #[test]
    fn teardown_script_quotes_every_value() {
        let env = BTreeMap::from([("A".to_string(), "$(x)".to_string())]);
        let cands = vec![
            (
                "it's.yml".to_string(),
                ".sandboxer-compose.override.yml".to_string(),
            ),
            (
                "sub/compose.yaml".to_string(),
                "sub/.sandboxer-compose.override.yml".to_string(),
            ),
        ];
        let s = teardown_script(&layout(), Some(ComposeVersion::V2), &cands, 5, &env);
        assert!(
            s.starts_with("W='/data $(touch x)/work/sbx-abc'\nP=sbx-abc\nID=sbx-abc\n"),
            "{s}"
        );
        assert!(s.contains("  C='docker compose'\n"), "{s}");
        assert!(
            s.contains(r#"if [ -f "$W"/'it'\''s.yml' ]; then set -- -f 'it'\''s.yml';"#),
            "{s}"
        );
        assert!(s.contains("  elif [ -f \"$W\"/sub/compose.yaml ]"), "{s}");
        assert!(s.contains("SANDBOXER_SANDBOX_ID=\"$ID\" A='$(x)' $C -p \"$P\" \"$@\" down -v --remove-orphans -t 5"), "{s}");
        let s = teardown_script(&layout(), None, &cands, 0, &BTreeMap::new());
        assert!(
            s.contains("C='docker compose'\n  elif command -v docker-compose"),
            "{s}"
        );
        assert!(s.contains("-t 0 2>&1"), "{s}");
    }

    #[test]
    fn list_script_has_the_docker_template() {
        let s = list_script("/d/work");
        assert!(
            s.contains(r#"--format '{{.Label "sandboxer.sandbox_id"}}	{{.Label "com.docker.compose.project"}}	{{.Status}}	{{.Label "com.docker.compose.project.working_dir"}}'"#),
            "{s}"
        );
        assert!(s.contains("cd /d/work 2>/dev/null"), "{s}");
    }
}
