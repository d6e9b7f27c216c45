//! Host inventory: what a placement host has (CPUs, load, memory, disk,
//! kernel, docker, running canary venues), read through the host transport
//! with one script ([`gather`]) or natively by the canary agent.

use std::path::Path;

use chrono::{DateTime, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};

use sandboxer_core::transport::{shell_quote, Transport, Utf8Path};
use sandboxer_core::{Error, ErrorKind, Result};

/// What a host has, at one moment. Every measurement is `None` when the host
/// did not report it (no `/proc`, a tool missing, an odd line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostInventory {
    /// The sandboxer host name (`local` or the hosts-file name).
    pub host: String,
    /// When it was collected (the host's clock).
    pub collected_at: DateTime<Utc>,
    /// CPUs this user may run on.
    pub cpus: Option<u32>,
    /// Load averages over 1, 5 and 15 minutes.
    pub load_1: Option<f64>,
    pub load_5: Option<f64>,
    pub load_15: Option<f64>,
    /// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
    pub mem_total_bytes: Option<u64>,
    pub mem_available_bytes: Option<u64>,
    /// Space available to unprivileged users on the filesystem of
    /// `disk_path`, in bytes.
    pub disk_free_bytes: Option<u64>,
    /// The size of that filesystem, in bytes.
    #[serde(default)]
    pub disk_total_bytes: Option<u64>,
    /// The folder whose filesystem `disk_free_bytes` measures: sandboxer's
    /// data dir (or its nearest existing parent), or the canary's venue.
    pub disk_path: Option<String>,
    /// Kernel release (`uname -r`).
    pub kernel: Option<String>,
    pub docker: DockerInfo,
    /// Canary venues on the host whose agent is running.
    pub venues_running: Option<u32>,
}

/// Docker on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DockerInfo {
    /// A `docker` command is on the PATH.
    pub present: bool,
    /// The daemon's (server) version; `None` when the daemon does not answer
    /// (down, no permission) or it was not asked (the canary agent).
    pub version: Option<String>,
}

/// The one POSIX sh script that prints the inventory of a host as tagged
/// `inv.KEY=VALUE` lines; `data_dir` is sandboxer's data folder on that host.
pub fn inventory_script(data_dir: &Utf8Path) -> String {
    let data = shell_quote(data_dir.as_str());
    let venues = shell_quote(data_dir.join("venues").as_str());
    format!(
        r#"{prelude}
echo inv.format=1
echo "inv.date=$(date -u +%s 2>/dev/null)"
_n=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null) && echo "inv.cpus=$_n"
if [ -r /proc/loadavg ]; then read -r _l < /proc/loadavg; echo "inv.loadavg=$_l"; fi
if [ -r /proc/meminfo ]; then
  while read -r _k _v _u; do
    case "$_k" in
      MemTotal:) echo "inv.mem_total_kb=$_v" ;;
      MemAvailable:) echo "inv.mem_available_kb=$_v" ;;
    esac
  done < /proc/meminfo
fi
_d={data}
while [ ! -d "$_d" ] && [ "$_d" != / ] && [ "$_d" != . ]; do _d=$(dirname "$_d"); done
echo "inv.disk_path=$_d"
df -Pk "$_d" 2>/dev/null | {{ read -r _h; read -r _l && echo "inv.df=$_l"; }}
echo "inv.kernel=$(uname -r 2>/dev/null)"
if _dk=$(command -v docker 2>/dev/null); then
  echo "inv.docker_path=$_dk"
  if command -v timeout >/dev/null 2>&1; then
    _dv=$(timeout 3 docker version --format '{{{{.Server.Version}}}}' 2>/dev/null)
  else
    _dv=$(docker version --format '{{{{.Server.Version}}}}' 2>/dev/null)
  fi
  echo "inv.docker_version=$_dv"
fi
_r=0
for _v in {venues}/sbx-*; do
  [ -d "$_v" ] && _sbx_alive "$_v" && _r=$((_r + 1))
done
echo "inv.venues_running=$_r"
echo inv.end=1
"#,
        prelude = crate::sh::PRELUDE,
    )
}

/// Parse what [`inventory_script`] printed on `host`. Pure apart from the
/// clock: `collected_at` is the host's `inv.date`, else now.
///
/// Lines that are not `inv.` lines are ignored (a login banner, a docker
/// warning); a value that does not parse leaves its field `None`. Output
/// without the `inv.format` line means the script did not run: an error.
pub fn parse_inventory(host: &str, stdout: &str) -> Result<HostInventory> {
    parse_inventory_at(host, stdout, sandboxer_core::model::now())
}

fn parse_inventory_at(host: &str, stdout: &str, now: DateTime<Utc>) -> Result<HostInventory> {
    let mut inv = HostInventory::empty(host, now);
    let mut saw_format = false;
    let (mut df_line, mut disk_path) = (None, None);
    for line in stdout.lines() {
        let Some((key, value)) = line.strip_prefix("inv.").and_then(|l| l.split_once('=')) else {
            continue;
        };
        let value = value.trim();
        match key {
            "format" => saw_format = true,
            "date" => {
                if let Some(t) = value
                    .parse::<i64>()
                    .ok()
                    .and_then(|s| Utc.timestamp_opt(s, 0).single())
                {
                    inv.collected_at = t;
                }
            }
            "cpus" => inv.cpus = value.parse().ok().filter(|n| *n > 0),
            "loadavg" => {
                if let Some((l1, l5, l15)) = parse_loadavg(value) {
                    (inv.load_1, inv.load_5, inv.load_15) = (Some(l1), Some(l5), Some(l15));
                }
            }
            "mem_total_kb" => inv.mem_total_bytes = kib(value),
            "mem_available_kb" => inv.mem_available_bytes = kib(value),
            "disk_path" => disk_path = non_empty(value),
            "df" => df_line = Some(value.to_string()),
            "kernel" => inv.kernel = non_empty(value),
            "docker_path" => inv.docker.present = !value.is_empty(),
            "docker_version" => inv.docker.version = docker_version(value),
            "venues_running" => inv.venues_running = value.parse().ok(),
            _ => {}
        }
    }
    if !saw_format {
        let head: String = stdout.lines().take(3).collect::<Vec<_>>().join(" | ");
        return Err(Error::new(
            ErrorKind::Internal,
            format!("host {host}: the inventory script printed no inventory (output: `{head}`)"),
        ));
    }
    inv.disk_free_bytes = df_line.as_deref().and_then(|l| df_column(l, 1));
    inv.disk_total_bytes = df_line.as_deref().and_then(|l| df_column(l, 3));
    inv.disk_path = disk_path;
    Ok(inv)
}

/// The inventory of the transport's host: one `exec` of
/// [`inventory_script`] and [`parse_inventory`]. Works on any transport.
pub async fn gather(transport: &dyn Transport) -> Result<HostInventory> {
    let out = transport
        .exec(&inventory_script(transport.data_dir()), None)
        .await
        .map_err(|e| e.context(format!("reading the inventory of {}", transport.host())))?;
    parse_inventory(transport.host(), &out.stdout_str()).map_err(|e| {
        if out.stderr.is_empty() {
            e
        } else {
            let tail = out.stderr_tail(5);
            e.context(format!("exit status {}, stderr: {tail}", out.status))
        }
    })
}

impl HostInventory {
    /// An inventory that knows nothing yet.
    fn empty(host: &str, at: DateTime<Utc>) -> Self {
        HostInventory {
            host: host.to_string(),
            collected_at: at,
            cpus: None,
            load_1: None,
            load_5: None,
            load_15: None,
            mem_total_bytes: None,
            mem_available_bytes: None,
            disk_free_bytes: None,
            disk_total_bytes: None,
            disk_path: None,
            kernel: None,
            docker: DockerInfo::default(),
            venues_running: None,
        }
    }

    /// Collect here, natively and fast (no child processes), as the canary
    /// agent does: `/proc/loadavg`, `/proc/meminfo`, `statvfs(disk_path)`,
    /// `uname`, the available parallelism, `docker` on the PATH (its version
    /// is not asked), and the running venues in `venues_dir`. `host` is the
    /// machine's node name.
    pub(crate) fn collect_here(disk_path: &Path, venues_dir: Option<&Path>) -> Self {
        let uts = uname();
        let mut inv = HostInventory::empty(
            uts.as_ref().map(|u| u.0.as_str()).unwrap_or(""),
            sandboxer_core::model::now(),
        );
        inv.cpus = std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as u32);
        if let Some((l1, l5, l15)) = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| parse_loadavg(&s))
        {
            (inv.load_1, inv.load_5, inv.load_15) = (Some(l1), Some(l5), Some(l15));
        }
        if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
            for line in meminfo.lines() {
                let mut words = line.split_whitespace();
                match (words.next(), words.next()) {
                    (Some("MemTotal:"), Some(v)) => inv.mem_total_bytes = kib(v),
                    (Some("MemAvailable:"), Some(v)) => inv.mem_available_bytes = kib(v),
                    _ => {}
                }
            }
        }
        if let Some((free, total)) = statvfs_space(disk_path) {
            inv.disk_free_bytes = Some(free);
            inv.disk_total_bytes = Some(total);
        }
        inv.disk_path = Some(disk_path.to_string_lossy().into_owned());
        inv.kernel = uts.map(|u| u.1);
        inv.docker.present = on_path("docker");
        inv.venues_running = venues_dir.map(count_running_venues);
        inv
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn kib(s: &str) -> Option<u64> {
    s.trim().parse::<u64>().ok()?.checked_mul(1024)
}

/// `0.52 0.58 0.59 1/467 12345` -> the three averages.
fn parse_loadavg(s: &str) -> Option<(f64, f64, f64)> {
    let mut it = s.split_whitespace().map(|w| w.parse::<f64>().ok());
    let (a, b, c) = (it.next()??, it.next()??, it.next()??);
    [a, b, c]
        .iter()
        .all(|x| x.is_finite() && *x >= 0.0)
        .then_some((a, b, c))
}

/// A `df -Pk` data line -> a column in bytes, counted back from the
/// `Capacity` column (`NN%`): 1 is `Available`, 3 the size. Counting from
/// there, a filesystem or mount name with spaces does not shift it.
fn df_column(line: &str, back: usize) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let cap = words.iter().position(|w| {
        w.len() > 1 && w.ends_with('%') && w[..w.len() - 1].bytes().all(|b| b.is_ascii_digit())
    })?;
    kib(words.get(cap.checked_sub(back)?)?)
}

/// The daemon's version, when the output looks like one (`20.10.24`,
/// `28.0.1`, `24.0.7-ce`); error text and empty output are `None`.
fn docker_version(s: &str) -> Option<String> {
    let v = s.lines().next()?.trim();
    let ok = v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '~' | '_'));
    ok.then(|| v.to_string())
}

/// (nodename, release) from uname(2).
fn uname() -> Option<(String, String)> {
    // SAFETY: utsname is plain old data; uname fills it and NUL-terminates
    // every field on success.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return None;
        }
        let field = |f: &[libc::c_char]| {
            std::ffi::CStr::from_ptr(f.as_ptr())
                .to_string_lossy()
                .into_owned()
        };
        Some((field(&u.nodename), field(&u.release)))
    }
}

/// (available to unprivileged users, size) of `path`'s filesystem, in bytes.
fn statvfs_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path; statvfs only writes `st`.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        let unit = st.f_frsize as u64;
        Some((
            (st.f_bavail as u64).checked_mul(unit)?,
            (st.f_blocks as u64).checked_mul(unit)?,
        ))
    }
}

/// Whether an executable `name` is in a folder of `$PATH`.
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Venues in `venues_dir` whose agent runs (see [`crate::agent::venue_agent_runs`]).
fn count_running_venues(venues_dir: &Path) -> u32 {
    let Ok(entries) = std::fs::read_dir(venues_dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("sbx-"))
        .filter(|e| crate::agent::venue_agent_runs(&e.path()))
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
    }

    /// Captured from a Debian 12 host with docker 20.10 running.
    const FULL: &str = "\
inv.format=1
inv.date=1767323045
inv.cpus=2
inv.loadavg=0.52 0.58 0.59 1/467 12345
inv.mem_total_kb=4026524
inv.mem_available_kb=3100000
inv.disk_path=/root/.local/share/sandboxer
inv.df=/dev/vda 264212084 12568620 82717268 14% /
inv.kernel=6.1.0-18-amd64
inv.docker_path=/usr/bin/docker
inv.docker_version=20.10.24+dfsg1
inv.venues_running=3
inv.end=1
";

    #[test]
    fn parses_a_full_sample() {
        let inv = parse_inventory_at("sandboxer01", FULL, at()).unwrap();
        assert_eq!(
            inv,
            HostInventory {
                host: "sandboxer01".into(),
                collected_at: Utc.timestamp_opt(1767323045, 0).unwrap(),
                cpus: Some(2),
                load_1: Some(0.52),
                load_5: Some(0.58),
                load_15: Some(0.59),
                mem_total_bytes: Some(4026524 * 1024),
                mem_available_bytes: Some(3100000 * 1024),
                disk_free_bytes: Some(82717268 * 1024),
                disk_total_bytes: Some(264212084 * 1024),
                disk_path: Some("/root/.local/share/sandboxer".into()),
                kernel: Some("6.1.0-18-amd64".into()),
                docker: DockerInfo {
                    present: true,
                    version: Some("20.10.24+dfsg1".into()),
                },
                venues_running: Some(3),
            }
        );
    }

    #[test]
    fn docker_present_with_the_daemon_down() {
        // `docker version` printed nothing on stdout (its error went to
        // stderr), so the version line is empty.
        let out = FULL.replace("inv.docker_version=20.10.24+dfsg1", "inv.docker_version=");
        let inv = parse_inventory_at("h", &out, at()).unwrap();
        assert_eq!(
            inv.docker,
            DockerInfo {
                present: true,
                version: None
            }
        );
        // Error text where a version should be is not a version either.
        let out = FULL.replace(
            "inv.docker_version=20.10.24+dfsg1",
            "inv.docker_version=Cannot connect to the Docker daemon at unix:///var/run/docker.sock",
        );
        let inv = parse_inventory_at("h", &out, at()).unwrap();
        assert_eq!(inv.docker.version, None);
    }

    #[test]
    fn no_docker() {
        let out: String = FULL
            .lines()
            .filter(|l| !l.starts_with("inv.docker"))
            .map(|l| format!("{l}\n"))
            .collect();
        let inv = parse_inventory_at("h", &out, at()).unwrap();
        assert_eq!(inv.docker, DockerInfo::default());
    }

    #[test]
    fn missing_lines_leave_fields_unknown() {
        // A host without /proc, nproc, df or date: only the frame.
        let inv = parse_inventory_at(
            "bsd",
            "inv.format=1\ninv.date=\ninv.disk_path=/\ninv.kernel=\ninv.venues_running=0\n",
            at(),
        )
        .unwrap();
        assert_eq!(inv.collected_at, at(), "falls back to now");
        assert_eq!(inv.cpus, None);
        assert_eq!((inv.load_1, inv.load_5, inv.load_15), (None, None, None));
        assert_eq!((inv.mem_total_bytes, inv.mem_available_bytes), (None, None));
        assert_eq!(inv.disk_free_bytes, None);
        assert_eq!(inv.disk_path.as_deref(), Some("/"));
        assert_eq!(inv.kernel, None);
        assert_eq!(inv.venues_running, Some(0));
        assert!(!inv.docker.present);
    }

    #[test]
    fn odd_lines_are_ignored_or_leave_the_field_unknown() {
        let out = "\
Welcome to sandboxer01! (a login banner)
inv.format=1
inv.cpus=zero
inv.loadavg=0.1 0.2
inv.mem_total_kb=lots
inv.mem_available_kb=-5
inv.df=Filesystem 1024-blocks Used Available Capacity Mounted on
inv.unknown_key=whatever
inv.venues_running=
inv without equals sign
inv.kernel=  6.1.0  
";
        let inv = parse_inventory_at("h", out, at()).unwrap();
        assert_eq!(inv.cpus, None);
        assert_eq!(inv.load_1, None);
        assert_eq!(inv.mem_total_bytes, None);
        assert_eq!(inv.mem_available_bytes, None);
        assert_eq!(inv.disk_free_bytes, None);
        assert_eq!(inv.venues_running, None);
        assert_eq!(inv.kernel.as_deref(), Some("6.1.0"));
    }

    #[test]
    fn output_without_the_frame_is_an_error() {
        let err = parse_inventory_at("h", "sh: 1: syntax error\n", at()).unwrap_err();
        assert!(err.message().contains("printed no inventory"), "{err}");
        assert!(err.message().contains("syntax error"), "{err}");
        assert!(parse_inventory_at("h", "", at()).is_err());
    }

    #[test]
    fn df_lines_with_spaces_in_names() {
        assert_eq!(
            df_column("map auto_home 0 0 100 0% /Volumes/My Disk", 1),
            Some(102400)
        );
        assert_eq!(
            df_column("/dev/vda 264212084 12568620 82717268 14% /", 1),
            Some(82717268 * 1024)
        );
        assert_eq!(
            df_column("/dev/vda 264212084 12568620 82717268 14% /", 3),
            Some(264212084 * 1024)
        );
        assert_eq!(df_column("garbage", 1), None);
        assert_eq!(df_column("100% /", 1), None);
        assert_eq!(df_column("12 100% /", 3), None);
    }

    #[test]
    fn loadavg_and_versions() {
        assert_eq!(
            parse_loadavg("1.00 2.50 0.00 1/1 1\n"),
            Some((1.0, 2.5, 0.0))
        );
        assert_eq!(parse_loadavg("1.0 NaN 2.0"), None);
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(docker_version("28.0.1\n"), Some("28.0.1".into()));
        assert_eq!(docker_version("24.0.7-ce"), Some("24.0.7-ce".into()));
        assert_eq!(docker_version(""), None);
        assert_eq!(docker_version("Error response from daemon"), None);
    }

    #[test]
    fn the_script_runs_under_sh_and_parses() {
        let dir = std::env::temp_dir().join(format!("sbx-inv-{}", std::process::id()));
        let script = inventory_script(&Utf8Path::new(dir.to_str().unwrap()).join("not/yet/there"));
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let inv = parse_inventory("local", &String::from_utf8_lossy(&out.stdout)).unwrap();
        assert!(inv.cpus.unwrap() >= 1);
        assert!(inv.mem_total_bytes.unwrap() > 0);
        assert!(inv.disk_free_bytes.is_some());
        assert_eq!(inv.disk_path, Some(dir.display().to_string()));
        assert!(inv.kernel.is_some());
        assert_eq!(inv.venues_running, Some(0));
    }

    #[test]
    fn native_collection_fills_the_linux_fields() {
        let inv = HostInventory::collect_here(Path::new("/"), None);
        assert!(inv.cpus.unwrap() >= 1);
        assert!(inv.load_1.is_some());
        assert!(inv.mem_available_bytes.unwrap() > 0);
        assert!(inv.disk_free_bytes.is_some());
        assert!(inv.kernel.is_some());
        assert!(!inv.host.is_empty());
        assert_eq!(inv.venues_running, None);
        assert_eq!(inv.docker.version, None);
    }
}
