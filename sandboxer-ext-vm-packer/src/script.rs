//! The shell scripts that run on the placement host, and the parsers of
//! what they print. Pure: building a script does no I/O, and every value in
//! a script goes through `shell_quote`.

use std::collections::{BTreeMap, BTreeSet};

use sandboxer_core::extension::Resource;
use sandboxer_core::model::is_sandbox_id;
use sandboxer_core::transport::{shell_quote, Utf8Path};

use crate::config::Accel;

/// The VM folder exists already (ids are never reused).
pub const EXIT_EXISTS: i32 = 40;
/// The qemu binary is not on the host.
pub const EXIT_NO_QEMU: i32 = 41;
/// The base image is not on the host.
pub const EXIT_NO_IMAGE: i32 = 42;
/// The kernel is not on the host.
pub const EXIT_NO_KERNEL: i32 = 43;
/// The initrd is not on the host.
pub const EXIT_NO_INITRD: i32 = 44;
/// `accel = "kvm"` but `/dev/kvm` is not usable.
pub const EXIT_NO_KVM: i32 = 45;
/// `qemu-img` is not on the host.
pub const EXIT_NO_QEMU_IMG: i32 = 46;
/// `qemu-img create` of the overlay failed.
pub const EXIT_OVERLAY: i32 = 47;
/// qemu does not stop even after SIGKILL.
pub const EXIT_UNSTOPPABLE: i32 = 48;

/// The files of a VM folder.
pub mod files {
    /// The per-sandbox qcow2 overlay on the base image.
    pub const OVERLAY: &str = "disk.qcow2";
    /// qemu's pid (written by qemu, removed by qemu when it exits).
    pub const PID: &str = "qemu.pid";
    /// What qemu printed while starting (errors, warnings).
    pub const QEMU_LOG: &str = "qemu.log";
    /// The guest's serial console.
    pub const CONSOLE_LOG: &str = "console.log";
    /// The host port forwarded to the guest's SSH port.
    pub const PORT: &str = "port";
    /// The qemu command line, for people.
    pub const ARGS: &str = "qemu.args";
    /// The monitor's input FIFO (`system_powerdown`).
    pub const MONITOR_IN: &str = "monitor.in";
    /// The monitor's output FIFO.
    pub const MONITOR_OUT: &str = "monitor.out";
    /// Prefix of the monitor FIFOs (qemu's `-chardev pipe,path=`).
    pub const MONITOR: &str = "monitor";
    /// Prefix of the QMP FIFOs (pause, resume, snapshot).
    pub const QMP: &str = "qmp";
    /// QMP's input FIFO.
    pub const QMP_IN: &str = "qmp.in";
    /// QMP's output FIFO.
    pub const QMP_OUT: &str = "qmp.out";
    /// In a snapshot folder: the VM's memory and device state (qemu's
    /// migration stream).
    pub const STATE: &str = "state";
}

/// QMP's FIFOs are missing: the VM was started by a release without them.
pub const EXIT_NO_QMP: i32 = 49;
/// A QMP command answered an error (the answer is on stdout).
pub const EXIT_QMP_ERROR: i32 = 50;
/// The snapshot to restore is not on the host.
pub const EXIT_NO_SNAPSHOT: i32 = 51;

/// Lines of qemu's log and of the console kept in an error.
pub const TAIL_LINES: usize = 20;

/// Where a sandbox's VM lives on its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub id: String,
    /// `DATA/vms`.
    pub vms_root: String,
    /// `DATA/vms/ID`.
    pub vm_dir: String,
}

impl Layout {
    /// The layout of `id` (which must be a sandbox id) under `data_dir`.
    pub fn new(data_dir: &Utf8Path, id: &str) -> Option<Layout> {
        if !is_sandbox_id(id) {
            return None;
        }
        let vms_root = data_dir.join("vms");
        Some(Layout {
            id: id.to_string(),
            vm_dir: vms_root.join(id).into_string(),
            vms_root: vms_root.into_string(),
        })
    }

    /// A file in the VM folder.
    pub fn file(&self, name: &str) -> String {
        Utf8Path::new(&self.vm_dir).join(name).into_string()
    }

    /// The qemu `-name` of the VM: `sandboxer-ID`.
    pub fn vm_name(&self) -> String {
        format!("sandboxer-{}", self.id)
    }
}

/// Everything the host needs to boot one VM, paths resolved on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub qemu: String,
    /// The base image the overlay is made on.
    pub base: Option<String>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub append: String,
    pub memory_mb: u32,
    pub cpus: u32,
    pub accel: Accel,
    pub nic_model: String,
    /// The host address the SSH forward binds.
    pub forward_address: String,
    pub guest_ssh_port: u16,
    pub extra_args: Vec<String>,
    /// A restore: the snapshot folder whose disk the overlay is copied from
    /// and whose state qemu loads (`-incoming`).
    pub restore: Option<String>,
}

/// Shell functions every script here uses. `_runs PID`: the process exists
/// and is not a zombie. `_ours PID DIR`: its command line names the VM
/// folder DIR (so a reused pid is never signalled). `_nap`: a 20 ms pause
/// (1 s where `sleep` takes whole seconds only; `_t` counts ticks either way).
const PRELUDE: &str = r#"_runs() {
  [ -r "/proc/$1/stat" ] || return 1
  _s=
  read -r _s < "/proc/$1/stat" 2>/dev/null || return 1
  _s=${_s##*) }
  [ -n "$_s" ] && [ "${_s%% *}" != Z ]
}
_ours() { grep -qaF -- "$2/" "/proc/$1/cmdline" 2>/dev/null; }
_nap() { sleep 0.02 2>/dev/null || { sleep 1; _t=$((_t + 49)); }; _t=$((_t + 1)); }
"#;

/// Check the host has what the plan needs, make the VM folder (the overlay,
/// the monitor FIFOs), and print the TCP ports in use there (`used N`
/// lines: listeners, and the ports other VM folders claim). Exit codes are
/// the `EXIT_*` constants; nothing is left behind on failure.
pub fn prepare_script(layout: &Layout, plan: &Plan) -> String {
    let d = shell_quote(&layout.vm_dir);
    let vms = shell_quote(&layout.vms_root);
    let q = shell_quote(&plan.qemu);
    let mut s = String::from("set -u\n");
    s.push_str(&format!(
        "command -v {q} >/dev/null 2>&1 || {{ printf '%s\\n' \"qemu binary not found on PATH: \"{q} >&2; exit {EXIT_NO_QEMU}; }}\n"
    ));
    let check = |s: &mut String, path: &str, what: &str, code: i32| {
        let p = shell_quote(path);
        s.push_str(&format!(
            "[ -f {p} ] && [ -r {p} ] || {{ printf '%s\\n' \"{what} not found: \"{p} >&2; exit {code}; }}\n"
        ));
    };
    if let Some(base) = &plan.base {
        check(&mut s, base, "image", EXIT_NO_IMAGE);
        s.push_str(&format!(
            "command -v qemu-img >/dev/null 2>&1 || {{ echo 'qemu-img not found on PATH' >&2; exit {EXIT_NO_QEMU_IMG}; }}\n"
        ));
    }
    if let Some(k) = &plan.kernel {
        check(&mut s, k, "kernel", EXIT_NO_KERNEL);
    }
    if let Some(i) = &plan.initrd {
        check(&mut s, i, "initrd", EXIT_NO_INITRD);
    }
    if plan.accel == Accel::Kvm {
        s.push_str(&format!(
            "[ -r /dev/kvm ] && [ -w /dev/kvm ] || {{ echo '/dev/kvm is missing or not usable' >&2; exit {EXIT_NO_KVM}; }}\n"
        ));
    }
    s.push_str(&format!(
        "D={d}\nVMS={vms}\n\
         mkdir -p \"$VMS\" || exit 1\n\
         mkdir \"$D\" 2>/dev/null || {{ [ -e \"$D\" ] && exit {EXIT_EXISTS}; mkdir \"$D\" || exit 1; }}\n\
         _fail() {{ rm -rf \"$D\"; exit \"$1\"; }}\n"
    ));
    if let Some(snap) = &plan.restore {
        s.push_str(&format!(
            "[ -f {st} ] || {{ printf '%s\\n' \"snapshot not found: \"{sd} >&2; _fail {EXIT_NO_SNAPSHOT}; }}\n",
            st = shell_quote(&Utf8Path::new(snap).join(files::STATE).into_string()),
            sd = shell_quote(snap),
        ));
    }
    match (&plan.base, &plan.restore) {
        (Some(_), Some(snap)) => s.push_str(&format!(
            "cp --sparse=always {src} \"$D/{ov}\" >&2 || _fail {EXIT_OVERLAY}\n",
            src = shell_quote(&Utf8Path::new(snap).join(files::OVERLAY).into_string()),
            ov = files::OVERLAY
        )),
        (Some(base), None) => s.push_str(&format!(
            "qemu-img create -q -f qcow2 -b {b} -F qcow2 \"$D/{ov}\" >&2 || _fail {EXIT_OVERLAY}\n",
            b = shell_quote(base),
            ov = files::OVERLAY
        )),
        (None, _) => {}
    }
    s.push_str(&format!(
        "mkfifo \"$D/{mi}\" \"$D/{mo}\" \"$D/{qi}\" \"$D/{qo}\" || _fail 1\n\
         : > \"$D/{con}\" || _fail 1\n\
         for f in /proc/net/tcp /proc/net/tcp6; do\n\
         \x20 [ -r \"$f\" ] || continue\n\
         \x20 while read -r _sl _loc _rem _st _rest; do\n\
         \x20   [ \"$_st\" = 0A ] || continue\n\
         \x20   echo \"used $((0x${{_loc##*:}}))\"\n\
         \x20 done < \"$f\"\n\
         done\n\
         for f in \"$VMS\"/*/{port}; do\n\
         \x20 [ -f \"$f\" ] || continue\n\
         \x20 _p=; read -r _p < \"$f\" && echo \"used $_p\"\n\
         done\n\
         exit 0\n",
        mi = files::MONITOR_IN,
        mo = files::MONITOR_OUT,
        qi = files::QMP_IN,
        qo = files::QMP_OUT,
        con = files::CONSOLE_LOG,
        port = files::PORT,
    ));
    s
}

/// qemu's value syntax: a comma inside a value is written twice.
fn opt_value(s: &str) -> String {
    s.replace(',', ",,")
}

/// The qemu command line (without the binary) for `plan` in `layout`, with
/// the SSH forward on `port`.
pub fn qemu_args(layout: &Layout, plan: &Plan, port: u16) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|x| x.to_string()));
    let name = layout.vm_name();
    let pid = layout.file(files::PID);
    push(&["-name", &name, "-daemonize", "-pidfile", &pid]);
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    push(&["-accel", plan.accel.as_str()]);
    if plan.accel == Accel::Kvm {
        push(&["-cpu", "host"]);
    }
    let mem = plan.memory_mb.to_string();
    let cpus = plan.cpus.to_string();
    push(&["-m", &mem, "-smp", &cpus, "-no-reboot"]);
    if let (Some(k), Some(i)) = (&plan.kernel, &plan.initrd) {
        push(&["-kernel", k, "-initrd", i, "-append", &plan.append]);
    }
    if plan.base.is_some() {
        let drive = format!(
            "file={},if=virtio,format=qcow2",
            opt_value(&layout.file(files::OVERLAY))
        );
        push(&["-drive", &drive]);
    }
    let nic = format!(
        "user,model={},hostfwd=tcp:{}:{port}-:{}",
        plan.nic_model, plan.forward_address, plan.guest_ssh_port
    );
    push(&["-nic", &nic]);
    let console = format!(
        "file,id=console,path={}",
        opt_value(&layout.file(files::CONSOLE_LOG))
    );
    push(&["-chardev", &console, "-serial", "chardev:console"]);
    let monitor = format!(
        "pipe,id=monitor,path={}",
        opt_value(&layout.file(files::MONITOR))
    );
    push(&[
        "-chardev",
        &monitor,
        "-mon",
        "chardev=monitor,mode=readline",
    ]);
    let qmp = format!("pipe,id=qmp,path={}", opt_value(&layout.file(files::QMP)));
    push(&["-chardev", &qmp, "-mon", "chardev=qmp,mode=control"]);
    if let Some(snap) = &plan.restore {
        // The memory and device state of the snapshot; the VM runs on from
        // it once loaded.
        let state = Utf8Path::new(snap).join(files::STATE);
        push(&["-incoming", &format!("file:{state}")]);
    }
    a.extend(plan.extra_args.iter().cloned());
    a
}

/// The shell function `_qmp EXECUTE [ARGUMENTS]` (after `D` is set): send
/// one QMP command (with an id of this script's own, so no answer left in
/// the FIFO by another is taken for it) and print its answer line, read
/// with the shell's `read` a byte at a time (nothing after it is taken
/// from the FIFO; awk would wait for a whole block). Its status is 1 when
/// no answer came within 30 s, [`EXIT_QMP_ERROR`] when the answer is an
/// error. Exits [`EXIT_NO_QMP`] when the VM has no QMP FIFOs.
/// Capabilities are negotiated first (answered once, then an error that is
/// ignored).
pub fn qmp_prelude() -> String {
    format!(
        r#"[ -p "$D/{qi}" ] && [ -p "$D/{qo}" ] || {{ echo "no QMP in $D (a VM started by an older release)" >&2; exit {EXIT_NO_QMP}; }}
exec 3<"$D/{qo}" 4>"$D/{qi}" || exit 1
printf '%s\n' '{{"execute":"qmp_capabilities"}}' >&4 || exit 1
_qn=0
_qmp() {{
  _qn=$((_qn + 1))
  _id="sandboxer-$$-$_qn"
  if [ -n "${{2:-}}" ]; then
    printf '{{"execute":"%s","arguments":%s,"id":"%s"}}\n' "$1" "$2" "$_id" >&4 || return 1
  else
    printf '{{"execute":"%s","id":"%s"}}\n' "$1" "$_id" >&4 || return 1
  fi
  _a=$(timeout 30 sh -c 'while IFS= read -r _l; do case "$_l" in *"$1"*) printf "%s\n" "$_l"; exit 0 ;; esac; done; exit 1' sh "\"$_id\"" <&3) || return 1
  [ -n "$_a" ] || return 1
  printf '%s\n' "$_a"
  case "$_a" in *'"error"'*) return {EXIT_QMP_ERROR} ;; esac
  return 0
}}
"#,
        qi = files::QMP_IN,
        qo = files::QMP_OUT,
    )
}

/// After a restored VM's launch: wait (up to 60 s) until qemu has loaded
/// the snapshot's state, then run the guest (`cont`; a snapshot records
/// the VM as paused, and qemu keeps a loaded VM the way it was recorded).
pub fn run_restored_script(layout: &Layout) -> String {
    format!(
        r#"{PRELUDE}D={d}
{prelude}_t=0
while :; do
  _s=$(_qmp query-status) || exit 1
  case "$_s" in *'"inmigrate"'*) ;; *) break ;; esac
  [ "$_t" -lt 3000 ] || {{ echo "qemu did not load the snapshot in 60 s: $_s" >&2; exit 1; }}
  _nap
done
case "$_s" in *'"running": true'*) exit 0 ;; esac
_qmp cont >/dev/null
"#,
        d = shell_quote(&layout.vm_dir),
        prelude = qmp_prelude(),
    )
}

/// Stop (`stop`) or continue (`cont`) the VM's CPUs through QMP.
pub fn run_state_script(layout: &Layout, execute: &str) -> String {
    format!(
        "D={d}\n{prelude}_qmp {cmd} >/dev/null || exit $?\n",
        d = shell_quote(&layout.vm_dir),
        prelude = qmp_prelude(),
        cmd = shell_quote(execute),
    )
}

/// Save the VM into `snap` (made as `partial`, renamed once whole): stop
/// its CPUs, migrate its memory and device state to `snap/state`, copy its
/// overlay (the disk as of that moment), run it again when it was running,
/// and print the bytes kept. On failure the partial folder is removed and
/// a VM that ran runs again.
pub fn snapshot_script(layout: &Layout, snap: &str, partial: &str, has_disk: bool) -> String {
    let state = Utf8Path::new(partial).join(files::STATE);
    let migrate = serde_json::json!({ "uri": format!("file:{state}") }).to_string();
    let disk = if has_disk {
        format!(
            "cp --sparse=always \"$D/{ov}\" \"$T/{ov}\" || _fail\n",
            ov = files::OVERLAY
        )
    } else {
        String::new()
    };
    format!(
        r#"{PRELUDE}D={d}
S={s}
T={t}
{prelude}_ran=0
_fail() {{ rm -rf "$T"; [ "$_ran" = 1 ] && _qmp cont >/dev/null; exit 1; }}
_st=$(_qmp query-status) || exit 1
case "$_st" in *'"running": true'*) _ran=1 ;; esac
rm -rf "$T" && mkdir -p "$T" || exit 1
_qmp stop >/dev/null || _fail
_qmp migrate {migrate} >&2 || _fail
_t=0
while :; do
  _m=$(_qmp query-migrate) || _fail
  case "$_m" in
    *'"completed"'*) break ;;
    *'"failed"'*|*'"cancelled"'*) echo "migration to the snapshot failed: $_m" >&2; _fail ;;
  esac
  [ "$_t" -lt 3000 ] || {{ echo "migration to the snapshot did not finish in 60 s: $_m" >&2; _fail; }}
  _nap
done
{disk}if [ "$_ran" = 1 ]; then _qmp cont >/dev/null || _fail; fi
mv "$T" "$S" || _fail
du -sk "$S" | cut -f1 | {{ read -r _k; echo $((_k * 1024)); }}
"#,
        d = shell_quote(&layout.vm_dir),
        s = shell_quote(snap),
        t = shell_quote(partial),
        prelude = qmp_prelude(),
        migrate = shell_quote(&migrate),
    )
}

/// Claim `port`, start qemu detached (`-daemonize`: the launch returns once
/// qemu is running, or fails with qemu's own error), print its pid. On
/// failure the tail of `qemu.log` goes to stderr.
pub fn launch_script(layout: &Layout, qemu: &str, args: &[String], port: u16) -> String {
    let d = shell_quote(&layout.vm_dir);
    let cmd = std::iter::once(qemu)
        .chain(args.iter().map(String::as_str))
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "set -u\nD={d}\n\
         [ -d \"$D\" ] || {{ echo \"the VM folder $D is gone\" >&2; exit 1; }}\n\
         printf '%s\\n' {port} > \"$D/{port_file}\" || exit 1\n\
         printf '%s\\n' {cmd_q} > \"$D/{args_file}\"\n\
         {cmd} </dev/null >\"$D/{log}\" 2>&1\n\
         rc=$?\n\
         if [ $rc -ne 0 ]; then tail -n {TAIL_LINES} \"$D/{log}\" >&2; exit $rc; fi\n\
         _p=; read -r _p < \"$D/{pid}\" 2>/dev/null; echo \"$_p\"\n",
        port_file = files::PORT,
        args_file = files::ARGS,
        cmd_q = shell_quote(&cmd),
        log = files::QEMU_LOG,
        pid = files::PID,
    )
}

/// Print `running PID` when the VM's qemu runs, else `exited`; then, with
/// `tails`, the tail of qemu's log and of the console after `--- qemu.log`
/// and `--- console.log` lines.
pub fn status_script(layout: &Layout, tails: bool) -> String {
    let mut s = format!(
        "{PRELUDE}D={d}\n_p=; read -r _p < \"$D/{pid}\" 2>/dev/null\n\
         if [ -n \"$_p\" ] && _runs \"$_p\" && _ours \"$_p\" \"$D\"; then echo \"running $_p\"; else echo exited; fi\n",
        d = shell_quote(&layout.vm_dir),
        pid = files::PID,
    );
    if tails {
        for f in [files::QEMU_LOG, files::CONSOLE_LOG] {
            s.push_str(&format!(
                "echo '--- {f}'; tail -n {TAIL_LINES} \"$D/{f}\" 2>/dev/null\n"
            ));
        }
    }
    s.push_str("exit 0\n");
    s
}

/// What [`status_script`] printed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub pid: Option<u32>,
    pub qemu_log: String,
    pub console_log: String,
}

impl Status {
    pub fn running(&self) -> bool {
        self.pid.is_some()
    }

    /// The tails, for an error message (an empty one says so).
    pub fn tails(&self) -> String {
        let mut out = String::new();
        for (name, text) in [
            (files::QEMU_LOG, &self.qemu_log),
            (files::CONSOLE_LOG, &self.console_log),
        ] {
            let text = text.trim_end();
            if text.trim().is_empty() {
                out.push_str(&format!("\n--- {name}: (empty)"));
            } else {
                out.push_str(&format!("\n--- {name} (last lines):\n{text}"));
            }
        }
        out
    }
}

/// Parse [`status_script`]'s output.
pub fn parse_status(text: &str) -> Status {
    let mut st = Status::default();
    let mut section: Option<&str> = None;
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("--- ") {
            section = Some(if f == files::QEMU_LOG {
                files::QEMU_LOG
            } else {
                files::CONSOLE_LOG
            });
            continue;
        }
        match section {
            None => {
                if let Some(p) = line.strip_prefix("running ") {
                    st.pid = p.trim().parse().ok();
                }
            }
            Some(f) => {
                let target = if f == files::QEMU_LOG {
                    &mut st.qemu_log
                } else {
                    &mut st.console_log
                };
                target.push_str(&clean_line(line));
                target.push('\n');
            }
        }
    }
    st
}

/// A console line without carriage returns and other control characters.
fn clean_line(line: &str) -> String {
    line.chars()
        .filter(|c| *c == '\t' || !c.is_control())
        .collect()
}

/// Stop the VM and remove its folder: `system_powerdown` on the monitor,
/// up to `stop_ticks` × 20 ms for the guest to power off (waiting for EOF on
/// the monitor's output, which comes the moment qemu exits; polling where
/// `timeout` is missing), then SIGTERM (2 s), then SIGKILL. The qemu process is the pidfile's when that process
/// names the folder, else any qemu whose command line names it (a lost
/// pidfile, a folder already removed). Succeeds when nothing is left; an
/// unknown id is fine.
pub fn teardown_script(layout: &Layout, stop_ticks: u64) -> String {
    format!(
        r#"{PRELUDE}D={d}
case "$D" in */vms/sbx-*) ;; *) echo "refusing to remove $D" >&2; exit 3 ;; esac
_pids() {{
  _p=
  read -r _p < "$D/{pid}" 2>/dev/null
  if [ -n "$_p" ] && _runs "$_p" && _ours "$_p" "$D"; then echo "$_p"; return 0; fi
  for _c in /proc/[0-9]*/comm; do
    _n=
    read -r _n < "$_c" 2>/dev/null || continue
    case "$_n" in qemu*) ;; *) continue ;; esac
    _q=${{_c#/proc/}}; _q=${{_q%/comm}}
    if _runs "$_q" && _ours "$_q" "$D"; then echo "$_q"; fi
  done
  return 0
}}
_alive() {{ for _x in $P; do _runs "$_x" && return 0; done; return 1; }}
_await() {{ _t=0; while _alive && [ "$_t" -lt "$1" ]; do _nap; done; }}
P=$(_pids)
if [ -n "$P" ]; then
  if [ -p "$D/{mon}" ]; then
    {{ exec 3<>"$D/{mon}" && printf 'system_powerdown\n' >&3; exec 3>&-; }} 2>/dev/null
    if [ -p "$D/{out}" ] && command -v timeout >/dev/null 2>&1; then
      # qemu is the monitor output's only writer: EOF comes the moment it exits.
      timeout {secs}.{hundredths:02} cat "$D/{out}" >/dev/null 2>&1
      _await 25
    else
      _await {stop_ticks}
    fi
  fi
  if _alive; then kill -TERM $P 2>/dev/null; _await 100; fi
  if _alive; then kill -KILL $P 2>/dev/null; _await 100; fi
  if _alive; then echo "qemu (pid $P) of $D does not stop" >&2; exit {EXIT_UNSTOPPABLE}; fi
fi
rm -rf "$D" 2>/dev/null || {{ sleep 1; rm -rf "$D"; }}
[ ! -e "$D" ]
"#,
        d = shell_quote(&layout.vm_dir),
        pid = files::PID,
        mon = files::MONITOR_IN,
        out = files::MONITOR_OUT,
        secs = stop_ticks / 50,
        hundredths = (stop_ticks % 50) * 2,
    )
}

/// List the VM folders under `vms_root` (`dir ID running|stopped`) and the
/// qemu processes whose command line names a folder there (`proc PID` then
/// the arguments that name it, one per line), for [`parse_listing`].
pub fn list_script(vms_root: &str) -> String {
    format!(
        r#"{PRELUDE}VMS={vms}
for _d in "$VMS"/sbx-*; do
  [ -d "$_d" ] || continue
  _id=${{_d##*/}}
  _r=stopped
  _p=
  read -r _p < "$_d/{pid}" 2>/dev/null
  if [ -n "$_p" ] && _runs "$_p" && _ours "$_p" "$_d"; then _r=running; fi
  printf 'dir\t%s\t%s\n' "$_id" "$_r"
done
for _c in /proc/[0-9]*/comm; do
  _n=
  read -r _n < "$_c" 2>/dev/null || continue
  case "$_n" in qemu*) ;; *) continue ;; esac
  _q=${{_c#/proc/}}; _q=${{_q%/comm}}
  _runs "$_q" || continue
  grep -qaF -- "$VMS/sbx-" "/proc/$_q/cmdline" 2>/dev/null || continue
  printf 'proc\t%s\n' "$_q"
  tr '\0' '\n' < "/proc/$_q/cmdline" 2>/dev/null | grep -F -- "$VMS/sbx-" | sed 's/^/arg\t/'
done
exit 0
"#,
        vms = shell_quote(vms_root),
        pid = files::PID,
    )
}

/// The `kind` of the resources [`parse_listing`] returns.
pub const VM_RESOURCE_KIND: &str = "vm";

/// [`list_script`]'s output as resources: one per sandbox id, running when
/// its folder's qemu runs or a qemu names its folder.
pub fn parse_listing(text: &str, vms_root: &str) -> Vec<Resource> {
    let mut by_id: BTreeMap<String, Resource> = BTreeMap::new();
    let prefix = format!("{vms_root}/");
    let mut add = |id: &str, running: bool| {
        if !is_sandbox_id(id) {
            return;
        }
        let r = by_id.entry(id.to_string()).or_insert_with(|| Resource {
            sandbox_id: id.to_string(),
            kind: VM_RESOURCE_KIND.to_string(),
            name: format!("{prefix}{id}"),
            running: false,
        });
        r.running |= running;
    };
    for line in text.lines() {
        let mut cols = line.splitn(3, '\t');
        match (cols.next(), cols.next(), cols.next()) {
            (Some("dir"), Some(id), state) => add(id, state == Some("running")),
            (Some("arg"), Some(arg), None) => {
                // An argument naming DATA/vms/ID/...: a running qemu of ID.
                if let Some(at) = arg.find(&prefix) {
                    let rest = &arg[at + prefix.len()..];
                    let id = rest.split('/').next().unwrap_or_default();
                    if rest.len() > id.len() {
                        add(id, true);
                    }
                }
            }
            _ => {}
        }
    }
    by_id.into_values().collect()
}

/// The `used N` ports [`prepare_script`] printed.
pub fn parse_used_ports(text: &str) -> BTreeSet<u16> {
    text.lines()
        .filter_map(|l| l.strip_prefix("used "))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// A port in `range` that is not in `used` or `tried`, starting at an
/// offset drawn from `seed` (so concurrent provisions spread out).
pub fn pick_port(
    range: (u16, u16),
    used: &BTreeSet<u16>,
    tried: &BTreeSet<u16>,
    seed: u64,
) -> Option<u16> {
    let (lo, hi) = range;
    let span = u64::from(hi - lo) + 1;
    (0..span)
        .map(|i| lo + ((seed.wrapping_add(i)) % span) as u16)
        .find(|p| !used.contains(p) && !tried.contains(p))
}

/// Whether qemu's error says the forward's port was taken.
pub fn is_port_conflict(stderr: &str) -> bool {
    stderr.contains("host forwarding rule") || stderr.contains("Address already in use")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new(Utf8Path::new("/data/"), "sbx-abc234").unwrap()
    }

    fn plan() -> Plan {
        Plan {
            qemu: "qemu-system-x86_64".into(),
            base: Some("/img/base.qcow2".into()),
            kernel: Some("/img/vmlinuz".into()),
            initrd: Some("/img/initrd.img".into()),
            append: "console=ttyS0 quiet".into(),
            memory_mb: 256,
            cpus: 2,
            accel: Accel::Tcg,
            nic_model: "e1000".into(),
            forward_address: "127.0.0.2".into(),
            guest_ssh_port: 22,
            extra_args: vec!["-cpu".into(), "max".into()],
            restore: None,
        }
    }

    #[test]
    fn layout_needs_a_sandbox_id() {
        let l = layout();
        assert_eq!(l.vm_dir, "/data/vms/sbx-abc234");
        assert_eq!(l.vms_root, "/data/vms");
        assert_eq!(l.vm_name(), "sandboxer-sbx-abc234");
        assert!(Layout::new(Utf8Path::new("/data"), "../etc").is_none());
        assert!(Layout::new(Utf8Path::new("/data"), "sbx-a b").is_none());
    }

    #[test]
    fn qemu_args_carry_the_profile() {
        let a = qemu_args(&layout(), &plan(), 22222).join(" ");
        for needle in [
            "-name sandboxer-sbx-abc234 -daemonize -pidfile /data/vms/sbx-abc234/qemu.pid",
            "-accel tcg",
            "-m 256 -smp 2 -no-reboot",
            "-kernel /img/vmlinuz -initrd /img/initrd.img -append console=ttyS0 quiet",
            "-drive file=/data/vms/sbx-abc234/disk.qcow2,if=virtio,format=qcow2",
            "-nic user,model=e1000,hostfwd=tcp:127.0.0.2:22222-:22",
            "-chardev file,id=console,path=/data/vms/sbx-abc234/console.log -serial chardev:console",
            "-chardev pipe,id=monitor,path=/data/vms/sbx-abc234/monitor",
            "-cpu max",
        ] {
            assert!(a.contains(needle), "missing {needle:?} in {a}");
        }
        let mut kvm = plan();
        kvm.accel = Accel::Kvm;
        kvm.kernel = None;
        kvm.initrd = None;
        let a = qemu_args(&layout(), &kvm, 22222).join(" ");
        assert!(a.contains("-accel kvm -cpu host"), "{a}");
        assert!(!a.contains("-kernel"), "{a}");
    }

    #[test]
    fn commas_in_paths_are_doubled_for_qemu() {
        let l = Layout::new(Utf8Path::new("/d,x"), "sbx-abc").unwrap();
        let a = qemu_args(&l, &plan(), 1).join(" ");
        assert!(
            a.contains("file=/d,,x/vms/sbx-abc/disk.qcow2,if=virtio"),
            "{a}"
        );
    }

    #[test]
    fn scripts_quote_every_value() {
        let l = Layout::new(Utf8Path::new("/tmp/it's here"), "sbx-abc").unwrap();
        let mut p = plan();
        p.base = Some("/img/$(touch /tmp/pwned).qcow2".into());
        let s = prepare_script(&l, &p);
        assert!(s.contains("'/img/$(touch /tmp/pwned).qcow2'"), "{s}");
        assert!(s.contains(r"D='/tmp/it'\''s here/vms/sbx-abc'"), "{s}");
        let s = launch_script(
            &l,
            "qemu-system-x86_64",
            &["-append".into(), "a;b".into()],
            5,
        );
        assert!(s.contains("-append 'a;b'"), "{s}");
        let s = teardown_script(&l, 10);
        assert!(s.contains(r"D='/tmp/it'\''s here/vms/sbx-abc'"), "{s}");
        let s = teardown_script(&layout(), 501);
        assert!(s.contains("timeout 10.02 cat"), "{s}");
    }

    #[test]
    fn prepare_checks_only_what_the_plan_uses() {
        let mut p = plan();
        p.base = None;
        p.accel = Accel::Kvm;
        let s = prepare_script(&layout(), &p);
        assert!(!s.contains("qemu-img"), "{s}");
        assert!(s.contains("/dev/kvm"), "{s}");
        assert!(s.contains(&format!("exit {EXIT_NO_KERNEL}")), "{s}");
    }

    #[test]
    fn status_parses_with_tails() {
        let st = parse_status(
            "running 4242\n--- qemu.log\nwarning: x\n--- console.log\n[ 1.0] boot\r\n\x1b[0mok\n",
        );
        assert_eq!(st.pid, Some(4242));
        assert_eq!(st.qemu_log, "warning: x\n");
        assert_eq!(st.console_log, "[ 1.0] boot\n[0mok\n");
        assert!(st
            .tails()
            .contains("--- console.log (last lines):\n[ 1.0] boot"));
        let st = parse_status("exited\n--- qemu.log\n--- console.log\n");
        assert!(!st.running());
        assert_eq!(
            st.tails(),
            "\n--- qemu.log: (empty)\n--- console.log: (empty)"
        );
    }

    #[test]
    fn listing_merges_folders_and_processes() {
        let text = "dir\tsbx-aaa\trunning\ndir\tsbx-bbb\tstopped\ndir\tnot-an-id\trunning\n\
                    proc\t77\narg\t/d/vms/sbx-ccc/qemu.pid\narg\tfile=/d/vms/sbx-ccc/disk.qcow2,if=virtio\n\
                    proc\t78\narg\t/d/vms/sbx-bbb/qemu.pid\narg\t/d/vms/sbx-zzz\n";
        let r = parse_listing(text, "/d/vms");
        let got: Vec<(&str, bool)> = r
            .iter()
            .map(|r| (r.sandbox_id.as_str(), r.running))
            .collect();
        assert_eq!(
            got,
            [("sbx-aaa", true), ("sbx-bbb", true), ("sbx-ccc", true)]
        );
        assert_eq!(r[0].kind, VM_RESOURCE_KIND);
        assert_eq!(r[0].name, "/d/vms/sbx-aaa");
    }

    #[test]
    fn ports_are_picked_outside_what_is_used() {
        let used = parse_used_ports("used 22200\nused 22201\nused x\nnoise\n");
        assert_eq!(used, BTreeSet::from([22200, 22201]));
        let none = BTreeSet::new();
        assert_eq!(pick_port((22200, 22203), &used, &none, 0), Some(22202));
        assert_eq!(pick_port((22200, 22203), &used, &none, 3), Some(22203));
        let tried = BTreeSet::from([22202, 22203]);
        assert_eq!(pick_port((22200, 22203), &used, &tried, 0), None);
        assert_eq!(pick_port((65535, 65535), &none, &none, 9), Some(65535));
    }

    #[test]
    fn port_conflicts_are_recognised() {
        assert!(is_port_conflict(
            "qemu-system-x86_64: -nic user,hostfwd=tcp:127.0.0.1:22200-:22: Could not set up host forwarding rule 'tcp:127.0.0.1:22200-:22'"
        ));
        assert!(!is_port_conflict("qemu: could not load kernel"));
    }
}
