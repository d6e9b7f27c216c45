//! The route's `config` table, validated. Pure: nothing here looks at a
//! host or a file.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use sandboxer_core::route_config::{self, int_in, one_of, string_list, unknown_key};
use sandboxer_core::transport::{Utf8Path, Utf8PathBuf};
use sandboxer_core::Result;
use serde_json::Value;

/// `memory_mb` when the profile does not say.
pub const DEFAULT_MEMORY_MB: u32 = 512;
/// `cpus` when the profile does not say.
pub const DEFAULT_CPUS: u32 = 1;
/// `ssh_user` when the profile does not say.
pub const DEFAULT_SSH_USER: &str = "root";
/// `guest_ssh_port` when the profile does not say.
pub const DEFAULT_GUEST_SSH_PORT: u16 = 22;
/// `port_range` when the profile does not say: where the forwarded SSH port
/// is chosen on the host (below Linux's ephemeral range).
pub const DEFAULT_PORT_RANGE: (u16, u16) = (22200, 22999);
/// `append` for a direct kernel boot when the profile does not say.
pub const DEFAULT_APPEND: &str = "console=ttyS0 panic=1 quiet";
/// `nic_model` when the profile does not say.
pub const DEFAULT_NIC_MODEL: &str = "e1000";
/// `qemu` when the profile does not say.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";
/// `stop_timeout` when the profile does not say: how long the guest gets to
/// power off after `system_powerdown` before qemu is signalled.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The folder under the host's data dir that `image_dir` defaults to.
pub const DEFAULT_IMAGE_SUBDIR: &str = "images";

/// Every key the `config` table may have.
pub const CONFIG_KEYS: &[&str] = &[
    "image",
    "image_dir",
    "kernel",
    "initrd",
    "append",
    "memory_mb",
    "cpus",
    "accel",
    "ssh_user",
    "ssh_key",
    "guest_ssh_port",
    "port_range",
    "forward_address",
    "nic_model",
    "stop_timeout",
    "qemu",
    "qemu_args",
    "packer_template",
    "attach",
];

/// The keys of the `attach` table.
pub const ATTACH_KEYS: &[&str] = &["host", "port", "user"];

/// The accelerator qemu runs the guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// Software emulation: works everywhere, slow.
    #[default]
    Tcg,
    /// Linux KVM: needs a usable `/dev/kvm` on the host.
    Kvm,
}

impl Accel {
    /// `tcg` or `kvm`, as qemu's `-accel` and the reachability details say.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// A VM booted on the placement host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// `image`: the qcow2 base image the per-sandbox overlay is made on
    /// (relative to `image_dir`, or absolute).
    pub image: Option<String>,
    /// `image_dir`: where relative `image`, `kernel` and `initrd` paths
    /// are, on the host; `None` is `DATA/images`.
    pub image_dir: Option<String>,
    /// `kernel`: a kernel to boot directly (with `initrd`, `append`).
    pub kernel: Option<String>,
    /// `initrd`: the initramfs for `kernel`.
    pub initrd: Option<String>,
    /// `append`: the kernel command line for `kernel`.
    pub append: String,
    pub memory_mb: u32,
    pub cpus: u32,
    pub accel: Accel,
    /// `guest_ssh_port`: the port sshd listens on inside the guest.
    pub guest_ssh_port: u16,
    /// `port_range`: the host ports the SSH forward may take (inclusive).
    pub port_range: (u16, u16),
    /// `forward_address`: the host address the forward binds; `None` is the
    /// host's address when it is an IPv4 literal, else `0.0.0.0`.
    pub forward_address: Option<Ipv4Addr>,
    pub nic_model: String,
    pub stop_timeout: Duration,
    /// `qemu`: the qemu binary on the host.
    pub qemu: String,
    /// `qemu_args`: extra arguments, appended as they are (each quoted).
    pub qemu_args: Vec<String>,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            image: None,
            image_dir: None,
            kernel: None,
            initrd: None,
            append: DEFAULT_APPEND.to_string(),
            memory_mb: DEFAULT_MEMORY_MB,
            cpus: DEFAULT_CPUS,
            accel: Accel::Tcg,
            guest_ssh_port: DEFAULT_GUEST_SSH_PORT,
            port_range: DEFAULT_PORT_RANGE,
            forward_address: None,
            nic_model: DEFAULT_NIC_MODEL.to_string(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            qemu: DEFAULT_QEMU.to_string(),
            qemu_args: Vec::new(),
        }
    }
}

impl BootConfig {
    /// `image_dir` on a host whose data dir is `data_dir`: absolute as
    /// given, relative to the data dir, or `DATA/images`.
    pub fn image_dir_on(&self, data_dir: &Utf8Path) -> Utf8PathBuf {
        match self.image_dir.as_deref() {
            None => data_dir.join(DEFAULT_IMAGE_SUBDIR),
            // An absolute one replaces the data dir.
            Some(d) => data_dir.join(d.trim_end_matches('/')),
        }
    }

    /// A file of the profile (`image`, `kernel`, `initrd`) on the host:
    /// absolute as given, else in `image_dir`.
    pub fn resolve(&self, data_dir: &Utf8Path, file: &str) -> String {
        // An absolute `file` replaces the folder.
        self.image_dir_on(data_dir).join(file).into_string()
    }
}

/// An existing VM to attach to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachConfig {
    /// The address of its SSH server, as this machine reaches it.
    pub host: String,
    pub port: u16,
    pub user: String,
}

/// What a sandbox of the route is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Boot a VM on the placement host.
    Boot(BootConfig),
    /// Use an existing VM; teardown leaves it running.
    Attach(AttachConfig),
}

/// The validated `config` table of an `ext.vm-packer` route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    pub mode: Mode,
    /// `ssh_user`: the login the readiness check uses and consumers get
    /// (for attach mode, `attach.user` wins).
    pub ssh_user: String,
    /// `ssh_key`: the private key (a file on the machine running sandboxer)
    /// for the readiness login; `None` tries the SSH agent, then
    /// `~/.ssh/id_ed25519` and `~/.ssh/id_rsa`.
    pub ssh_key: Option<PathBuf>,
    /// `packer_template`: the Packer template the image is built from (a
    /// path in the sandboxer repo); named in the hint when the image is
    /// missing.
    pub packer_template: Option<String>,
}

impl VmConfig {
    /// Validate a route's `config` table. Every problem is reported at once,
    /// as one `InvalidConfig` error.
    pub fn from_map(map: &serde_json::Map<String, Value>) -> Result<VmConfig> {
        let mut boot = BootConfig::default();
        let mut ssh_user = DEFAULT_SSH_USER.to_string();
        let mut ssh_key = None;
        let mut packer_template = None;
        let mut attach: Option<AttachConfig> = None;
        let mut problems: Vec<String> = Vec::new();
        let mut append_set = false;
        let mut boot_keys: Vec<&str> = Vec::new();
        for (key, value) in map {
            let k = key.as_str();
            if !matches!(
                k,
                "ssh_user" | "ssh_key" | "packer_template" | "attach" | "stop_timeout"
            ) && CONFIG_KEYS.contains(&k)
            {
                boot_keys.push(k);
            }
            match k {
                "image" => boot.image = path_value(k, value, &mut problems),
                "image_dir" => boot.image_dir = path_value(k, value, &mut problems),
                "kernel" => boot.kernel = path_value(k, value, &mut problems),
                "initrd" => boot.initrd = path_value(k, value, &mut problems),
                "append" => match value.as_str() {
                    Some(s) if !s.chars().any(|c| c.is_control()) => {
                        boot.append = s.to_string();
                        append_set = true;
                    }
                    _ => problems.push(format!(
                        "`append` must be a string (the kernel command line), got {value}"
                    )),
                },
                "memory_mb" => match int_in(value, 64, 1 << 22) {
                    Some(n) => boot.memory_mb = n as u32,
                    None => problems.push(format!(
                        "`memory_mb` must be an integer from 64 to 4194304, got {value}"
                    )),
                },
                "cpus" => match int_in(value, 1, 256) {
                    Some(n) => boot.cpus = n as u32,
                    None => problems.push(format!(
                        "`cpus` must be an integer from 1 to 256, got {value}"
                    )),
                },
                "accel" => match one_of(value, &[("tcg", Accel::Tcg), ("kvm", Accel::Kvm)]) {
                    Some(a) => boot.accel = a,
                    None => problems.push(format!(
                        "`accel` must be \"tcg\" (emulation, works everywhere) or \"kvm\", got {value}"
                    )),
                },
                "ssh_user" => match value.as_str() {
                    Some(s) if is_user_name(s) => ssh_user = s.to_string(),
                    _ => problems.push(format!(
                        "`ssh_user` must be a user name ([a-z_][a-z0-9_.-]*), got {value}"
                    )),
                },
                "ssh_key" => match value.as_str() {
                    Some(s) if !s.trim().is_empty() && !s.chars().any(|c| c.is_control()) => {
                        ssh_key = Some(sandboxer_core::paths::expand_home(s))
                    }
                    _ => problems.push(format!(
                        "`ssh_key` must be the path of a private key file on this machine, got {value}"
                    )),
                },
                "guest_ssh_port" => match int_in(value, 1, 65535) {
                    Some(n) => boot.guest_ssh_port = n as u16,
                    None => problems.push(format!(
                        "`guest_ssh_port` must be a port number (1-65535), got {value}"
                    )),
                },
                "port_range" => match value.as_array().map(|a| a.as_slice()) {
                    Some([lo, hi]) => match (int_in(lo, 1024, 65535), int_in(hi, 1024, 65535)) {
                        (Some(lo), Some(hi)) if lo <= hi => {
                            boot.port_range = (lo as u16, hi as u16)
                        }
                        _ => problems.push(format!(
                            "`port_range` must be [LOW, HIGH] with 1024 <= LOW <= HIGH <= 65535, got {value}"
                        )),
                    },
                    _ => problems.push(format!(
                        "`port_range` must be a list of two port numbers [LOW, HIGH], got {value}"
                    )),
                },
                "forward_address" => match value.as_str().map(str::parse::<Ipv4Addr>) {
                    Some(Ok(a)) => boot.forward_address = Some(a),
                    _ => problems.push(format!(
                        "`forward_address` must be an IPv4 address of the host (e.g. \"0.0.0.0\"), got {value}"
                    )),
                },
                "nic_model" => match value.as_str() {
                    Some(s) if is_word(s) => boot.nic_model = s.to_string(),
                    _ => problems.push(format!(
                        "`nic_model` must be a qemu NIC model such as \"e1000\" or \"virtio-net-pci\", got {value}"
                    )),
                },
                "stop_timeout" => match route_config::duration(k, value, "10s") {
                    Ok(d) => boot.stop_timeout = d,
                    Err(problem) => problems.push(problem),
                },
                "qemu" => match value.as_str() {
                    Some(s) if !s.is_empty() && !s.chars().any(|c| c.is_control() || c == ' ') => {
                        boot.qemu = s.to_string()
                    }
                    _ => problems.push(format!(
                        "`qemu` must be the qemu binary (a name on PATH or a path), got {value}"
                    )),
                },
                "qemu_args" => match string_list(value) {
                    Some(list) if list.iter().all(|s| !s.chars().any(char::is_control)) => {
                        boot.qemu_args = list
                    }
                    _ => problems.push(format!(
                        "`qemu_args` must be a list of strings (extra qemu arguments), got {value}"
                    )),
                },
                "packer_template" => match value.as_str() {
                    Some(s) if !s.trim().is_empty() => packer_template = Some(s.to_string()),
                    _ => problems.push(format!(
                        "`packer_template` must be the path of a Packer template, got {value}"
                    )),
                },
                "attach" => match parse_attach(value) {
                    Ok(a) => attach = Some(a),
                    Err(mut why) => problems.append(&mut why),
                },
                other => problems.push(unknown_key(other, CONFIG_KEYS)),
            }
        }

        let mode = match attach {
            Some(a) => {
                if !boot_keys.is_empty() {
                    problems.push(format!(
                        "`attach` names an existing VM, so {} (which boot a VM) cannot be set with it",
                        boot_keys
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Mode::Attach(a)
            }
            None => {
                if boot.image.is_none() && boot.kernel.is_none() {
                    problems.push(
                        "nothing to boot: set `image` (a qcow2 base image), or `kernel` and \
                         `initrd`, or `attach` for an existing VM"
                            .to_string(),
                    );
                }
                if boot.kernel.is_none() && (boot.initrd.is_some() || append_set) {
                    problems.push("`initrd` and `append` need `kernel`".to_string());
                }
                if boot.kernel.is_some() && boot.initrd.is_none() {
                    problems.push("`kernel` needs `initrd`".to_string());
                }
                Mode::Boot(boot)
            }
        };
        route_config::check(
            crate::VM_PACKER_EXTENSION_ID,
            "sandboxer-ext-vm-packer/README.md",
            problems,
        )?;
        Ok(VmConfig {
            mode,
            ssh_user,
            ssh_key,
            packer_template,
        })
    }

    /// The boot config, if this route boots a VM.
    pub fn boot(&self) -> Option<&BootConfig> {
        match &self.mode {
            Mode::Boot(b) => Some(b),
            Mode::Attach(_) => None,
        }
    }

    /// The boot config, or the defaults (teardown of a sandbox whose config
    /// is gone or broken still finds the VM by its id).
    pub fn boot_or_default(&self) -> BootConfig {
        self.boot().cloned().unwrap_or_default()
    }

    /// The login consumers and the readiness check use.
    pub fn login_user(&self) -> &str {
        match &self.mode {
            Mode::Attach(a) => &a.user,
            Mode::Boot(_) => &self.ssh_user,
        }
    }
}

/// `stop_timeout` in the teardown script's ticks of 20 ms.
pub(crate) fn ticks(d: Duration) -> u64 {
    (d.as_millis() / 20).max(1) as u64
}

fn parse_attach(value: &Value) -> std::result::Result<AttachConfig, Vec<String>> {
    let Some(table) = value.as_object() else {
        return Err(vec![format!(
            "`attach` must be a table {{ host = \"ADDRESS\", port = PORT, user = \"USER\" }}, got {value}"
        )]);
    };
    let mut problems = Vec::new();
    let mut host = None;
    let mut port = None;
    let mut user = DEFAULT_SSH_USER.to_string();
    for (k, v) in table {
        match k.as_str() {
            "host" => match v.as_str() {
                Some(s) if is_host(s) => host = Some(s.to_string()),
                _ => problems.push(format!(
                    "`attach.host` must be an address or DNS name, got {v}"
                )),
            },
            "port" => match int_in(v, 1, 65535) {
                Some(n) => port = Some(n as u16),
                None => problems.push(format!("`attach.port` must be a port number, got {v}")),
            },
            "user" => match v.as_str() {
                Some(s) if is_user_name(s) => user = s.to_string(),
                _ => problems.push(format!("`attach.user` must be a user name, got {v}")),
            },
            other => problems.push(unknown_key(&format!("attach.{other}"), ATTACH_KEYS)),
        }
    }
    if host.is_none() {
        problems.push("`attach.host` is required".to_string());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(AttachConfig {
        host: host.expect("checked"),
        port: port.unwrap_or(DEFAULT_GUEST_SSH_PORT),
        user,
    })
}

fn path_value(key: &str, value: &Value, problems: &mut Vec<String>) -> Option<String> {
    match value.as_str() {
        Some(s) if !s.trim().is_empty() && !s.chars().any(|c| c.is_control()) => {
            Some(s.to_string())
        }
        _ => {
            problems.push(format!(
                "`{key}` must be a file path on the host, got {value}"
            ));
            None
        }
    }
}

fn is_user_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 32
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandboxer_core::ErrorKind;
    use serde_json::json;

    fn parse(v: Value) -> Result<VmConfig> {
        VmConfig::from_map(v.as_object().unwrap())
    }

    #[test]
    fn the_built_in_profile_config_parses() {
        let cfg = parse(json!({
            "image": "haskell-build.qcow2",
            "memory_mb": 2048,
            "cpus": 2,
            "accel": "tcg",
            "packer_template": "images/haskell-build.pkr.hcl",
        }))
        .unwrap();
        let boot = cfg.boot().unwrap();
        assert_eq!(boot.image.as_deref(), Some("haskell-build.qcow2"));
        assert_eq!((boot.memory_mb, boot.cpus), (2048, 2));
        assert_eq!(boot.accel, Accel::Tcg);
        assert_eq!(cfg.ssh_user, "root");
        assert_eq!(
            cfg.packer_template.as_deref(),
            Some("images/haskell-build.pkr.hcl")
        );
        assert_eq!(
            boot.resolve(Utf8Path::new("/srv/sbx/"), "haskell-build.qcow2"),
            "/srv/sbx/images/haskell-build.qcow2"
        );
    }

    #[test]
    fn every_key_is_read() {
        let cfg = parse(json!({
            "image": "/var/lib/images/base.qcow2",
            "image_dir": "vm-images",
            "kernel": "vmlinuz",
            "initrd": "initrd.img",
            "append": "console=ttyS0",
            "memory_mb": 256,
            "cpus": 1,
            "accel": "kvm",
            "ssh_user": "builder",
            "ssh_key": "/keys/id_ed25519",
            "guest_ssh_port": 2022,
            "port_range": [30000, 30010],
            "forward_address": "0.0.0.0",
            "nic_model": "virtio-net-pci",
            "stop_timeout": "3s",
            "qemu": "/opt/qemu/bin/qemu-system-x86_64",
            "qemu_args": ["-cpu", "max"],
            "packer_template": "images/x.pkr.hcl",
        }))
        .unwrap();
        let b = cfg.boot().unwrap();
        assert_eq!(b.image_dir_on(Utf8Path::new("/d")), "/d/vm-images");
        assert_eq!(
            b.resolve(Utf8Path::new("/d"), "vmlinuz"),
            "/d/vm-images/vmlinuz"
        );
        assert_eq!(
            b.resolve(Utf8Path::new("/d"), b.image.as_deref().unwrap()),
            "/var/lib/images/base.qcow2"
        );
        assert_eq!(b.append, "console=ttyS0");
        assert_eq!(b.accel, Accel::Kvm);
        assert_eq!(b.guest_ssh_port, 2022);
        assert_eq!(b.port_range, (30000, 30010));
        assert_eq!(b.forward_address, Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(b.nic_model, "virtio-net-pci");
        assert_eq!(b.stop_timeout, Duration::from_secs(3));
        assert_eq!(b.qemu_args, ["-cpu", "max"]);
        assert_eq!(cfg.login_user(), "builder");
        assert_eq!(
            cfg.ssh_key.as_deref(),
            Some(std::path::Path::new("/keys/id_ed25519"))
        );
    }

    #[test]
    fn attach_mode_takes_an_address() {
        let cfg = parse(json!({
            "attach": {"host": "10.1.2.3", "port": 2222, "user": "dev"},
            "ssh_key": "/k",
        }))
        .unwrap();
        assert_eq!(
            cfg.mode,
            Mode::Attach(AttachConfig {
                host: "10.1.2.3".into(),
                port: 2222,
                user: "dev".into()
            })
        );
        assert_eq!(cfg.login_user(), "dev");
        assert_eq!(cfg.boot_or_default(), BootConfig::default());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = parse(json!({
            "kernel": "vmlinuz",
            "memory_mb": 1,
            "cpus": "two",
            "accel": "hvf",
            "ssh_user": "Root Admin",
            "port_range": [2000, 1000],
            "forward_address": "localhost",
            "nic_model": "e1000,addr=3",
            "stop_timeout": "10",
            "qemu_args": "-cpu max",
            "imagee": "typo",
        }))
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        let m = e.message();
        for needle in [
            "`memory_mb` must be",
            "`cpus` must be",
            "`accel` must be",
            "`ssh_user` must be",
            "`port_range` must be",
            "`forward_address` must be",
            "`nic_model` must be",
            "`stop_timeout`:",
            "`qemu_args` must be",
            "unknown key `imagee`",
            "`kernel` needs `initrd`",
        ] {
            assert!(m.contains(needle), "missing {needle:?} in {m}");
        }
        assert!(m.contains("11 problems"), "{m}");
    }

    #[test]
    fn something_must_boot_and_attach_excludes_booting() {
        let e = parse(json!({"memory_mb": 512})).unwrap_err();
        assert!(e.message().contains("nothing to boot"), "{e}");
        let e = parse(json!({"initrd": "i", "image": "b.qcow2"})).unwrap_err();
        assert!(
            e.message().contains("`initrd` and `append` need `kernel`"),
            "{e}"
        );
        let e = parse(json!({"attach": {"host": "h"}, "image": "b.qcow2", "cpus": 2})).unwrap_err();
        assert!(
            e.message()
                .contains("`cpus`, `image` (which boot a VM) cannot be set"),
            "{e}"
        );
        let e = parse(json!({"attach": {"port": 22, "colour": 1}})).unwrap_err();
        assert!(e.message().contains("`attach.host` is required"), "{e}");
        assert!(e.message().contains("unknown key `attach.colour`"), "{e}");
    }

    #[test]
    fn image_and_kernel_combine() {
        let cfg = parse(json!({"image": "b.qcow2", "kernel": "k", "initrd": "i"})).unwrap();
        let b = cfg.boot().unwrap();
        assert_eq!(b.append, DEFAULT_APPEND);
        assert!(b.image.is_some() && b.kernel.is_some());
    }

    #[test]
    fn ticks_are_20_ms() {
        assert_eq!(ticks(Duration::from_secs(10)), 500);
        assert_eq!(ticks(Duration::ZERO), 1);
    }
}
