//! `ext.vm-packer` against real qemu (TCG), booting the small test image
//! that `scripts/vm-image build` makes from Debian packages, over
//! `LocalTransport` and over an SSH host of the testbed. One VM runs at a
//! time (a file lock), since the machine has two cores. Without qemu and the
//! packages each test skips loudly; under CI it fails.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use sandboxer_core::extension::Extension;
use sandboxer_core::hosts::Hosts;
use sandboxer_core::lifecycle::{EndReason, State};
use sandboxer_core::manager::CreateRequest;
use sandboxer_core::model::new_sandbox_id;
use sandboxer_core::reaper::StaleKind;
use sandboxer_core::routing::Constraints;
use sandboxer_core::ErrorKind;
use sandboxer_ext_vm_packer::{files, VmPackerExtension, VM_PACKER_EXTENSION_ID, VM_RESOURCE_KIND};
use sandboxer_testkit::conformance::run_conformance;
use sandboxer_testkit::testbed::require_testbed;
use sandboxer_testkit::wait;

use support::*;

fn request(host: Option<&str>) -> CreateRequest {
    CreateRequest {
        profile: "profile.vm-haskell-build".into(),
        actor: Some("adm:tester".parse().unwrap()),
        constraints: Constraints {
            host: host.map(str::to_string),
            ..Constraints::default()
        },
        ..CreateRequest::default()
    }
}

/// create -> get -> SSH in through the reachability (with the system's
/// ssh, as a consumer) -> attach a second sandbox to that VM -> destroy:
/// no qemu and no overlay remain, and the attached one left the VM alone.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn create_ssh_attach_destroy_on_local() {
    let image = require_vm("create_ssh_attach_destroy_on_local");
    let _vm = vm_lock();
    let world = World::new(
        &profile_toml(&image, &[], "2m", ""),
        Hosts::local_only(),
        None,
    );
    let m = &world.manager;

    let started = Instant::now();
    let sbx = m.create(request(None), true).await.unwrap();
    eprintln!("create to ready: {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(sbx.state(), State::Ready);
    assert_eq!(
        (sbx.extension.as_str(), sbx.host.as_str()),
        (VM_PACKER_EXTENSION_ID, "local")
    );
    let got = m.get(&sbx.id).unwrap();
    let r = got.reachability.clone().expect("reachability");
    let ssh = r.ssh.clone().expect("ssh target");
    assert_eq!(
        (ssh.host.as_str(), ssh.user.as_str()),
        ("127.0.0.1", "root")
    );
    assert_eq!(r.address, "127.0.0.1");
    assert_eq!(r.ports["ssh"][0].target, 22);
    assert_eq!(r.ports["ssh"][0].published, ssh.port);
    assert_eq!(r.details["accel"], "tcg");
    assert!(r.details["host_key"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));
    let vm_dir = std::path::PathBuf::from(r.details["vm_dir"].as_str().unwrap());
    assert_eq!(vm_dir, world.data.join("vms").join(&sbx.id));
    let pid = r.details["pid"].as_u64().unwrap() as u32;
    assert!(pids_naming(&format!("sandboxer-{}", sbx.id)).contains(&pid));

    // The overlay sits on the base image.
    let overlay = vm_dir.join(files::OVERLAY);
    let info = Command::new("qemu-img")
        .args(["info", "--force-share", "--output=json"])
        .arg(&overlay)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["backing-filename"], image.base(), "{info}");

    // A consumer's login, from the record alone.
    let out = ssh_run(
        &ssh.host,
        ssh.port,
        &ssh.user,
        &image.key(),
        "echo hi from $(hostname); uname -r",
    );
    assert!(out.starts_with("hi from sandboxer-vm\n"), "{out}");

    // Listed for the reaper while it runs.
    let ext = VmPackerExtension::new();
    let t: Arc<dyn sandboxer_core::transport::Transport> =
        Arc::new(sandboxer_transport::LocalTransport::new(world.data.clone()));
    let listed = ext.list_resources(t.clone()).await.unwrap();
    let mine = listed
        .iter()
        .find(|r| r.sandbox_id == sbx.id)
        .expect("listed");
    assert!(mine.running && mine.kind == VM_RESOURCE_KIND, "{mine:?}");

    // Attach mode: the same VM by its SSH address; teardown detaches.
    let attach_id = new_sandbox_id();
    let actx = make_ctx(
        &t,
        &attach_id,
        json!({
            "attach": {"host": ssh.host, "port": ssh.port, "user": "root"},
            "ssh_key": image.key(),
        }),
        Duration::from_secs(30),
    );
    let h = ext.provision(&actx).await.unwrap().handle;
    assert_eq!(h["mode"], "attach");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let ready = ext.wait_ready(&actx, &h, deadline).await.unwrap();
    let a = ready.reachability;
    assert_eq!(a.ssh.as_ref().unwrap().port, ssh.port);
    assert_eq!(a.address, ssh.host);
    assert_eq!(a.details["mode"], "attach");
    assert_eq!(a.details["host_key"], r.details["host_key"]);
    ext.teardown(&actx, &h).await.unwrap();
    ext.teardown(&actx, &Value::Null).await.unwrap();
    assert!(!world.data.join("vms").join(&attach_id).exists());
    let still = ssh_run(&ssh.host, ssh.port, "root", &image.key(), "echo still here");
    assert_eq!(still.trim(), "still here");

    // Destroy: the VM is gone and so is its folder with the overlay.
    let started = Instant::now();
    let done = m.destroy(&sbx.id, EndReason::Destroyed).await.unwrap();
    eprintln!("destroy: {:.2}s", started.elapsed().as_secs_f64());
    assert_eq!(done.state(), State::Destroyed);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the guest should power off at once"
    );
    assert_gone(&vm_dir, &sbx.id);
    assert!(!ext
        .list_resources(t)
        .await
        .unwrap()
        .iter()
        .any(|r| r.sandbox_id == sbx.id));
}

/// The same through an SSH placement host of the testbed: qemu runs on
/// `sandboxer01` (this machine, reached over SSH), the forward binds the
/// host's address, and the login goes there.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn create_ssh_destroy_on_an_ssh_host() {
    let tb = require_testbed("create_ssh_destroy_on_an_ssh_host");
    let image = require_vm("create_ssh_destroy_on_an_ssh_host");
    let _vm = vm_lock();
    let hosts = Hosts::load(&tb.config_dir()).unwrap();
    let world = World::new(
        &profile_toml(&image, &["sandboxer01", "coulombcore"], "2m", ""),
        hosts,
        Some(&tb.config_dir()),
    );
    let m = &world.manager;
    let sbx = m.create(request(Some("sandboxer01")), true).await.unwrap();
    assert_eq!(
        (sbx.state(), sbx.host.as_str()),
        (State::Ready, "sandboxer01")
    );
    let r = sbx.reachability.clone().unwrap();
    let ssh = r.ssh.clone().unwrap();
    assert_eq!(ssh.host, "127.0.0.2");
    let vm_dir = tb.host_data_dir("sandboxer01").join("vms").join(&sbx.id);
    assert_eq!(r.details["vm_dir"], vm_dir.display().to_string());
    assert!(vm_dir.join(files::OVERLAY).is_file());
    let args = std::fs::read_to_string(vm_dir.join(files::ARGS)).unwrap();
    assert!(
        args.contains(&format!("hostfwd=tcp:127.0.0.2:{}-:22", ssh.port)),
        "{args}"
    );

    let out = ssh_run(
        &ssh.host,
        ssh.port,
        &ssh.user,
        &image.key(),
        "cat /proc/sys/kernel/hostname",
    );
    assert_eq!(out.trim(), "sandboxer-vm");

    let done = m.destroy(&sbx.id, EndReason::Destroyed).await.unwrap();
    assert_eq!(done.state(), State::Destroyed);
    assert_gone(&vm_dir, &sbx.id);
}

/// The contract every extension keeps, with real VMs.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn conformance() {
    let image = require_vm("conformance");
    let _vm = vm_lock();
    let bed = Bed::new();
    let config = image.config();
    let make = |id: &str| bed.ctx(id, config.clone());
    run_conformance(Arc::new(VmPackerExtension::new()), &make).await;
    let left: Vec<_> = std::fs::read_dir(bed.data.join("vms"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "VM folders left: {left:?}");
    assert!(pids_naming(&bed.data.display().to_string()).is_empty());
}

/// A base image that is not there: failed before anything runs, with the
/// path, where images go and how to build one.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn missing_image_fails_with_the_path() {
    let image = require_vm("missing_image_fails_with_the_path");
    let world = World::new(
        &profile_toml(&image, &[], "1m", "").replace(&image.base(), "haskell-build.qcow2"),
        Hosts::local_only(),
        None,
    );
    let e = world.manager.create(request(None), true).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProvisionFailed);
    let images = world.data.join("images");
    assert!(
        e.message().contains(&format!(
            "image not found: {}/haskell-build.qcow2",
            images.display()
        )),
        "{e}"
    );
    assert!(
        e.hint().unwrap().contains("images/haskell-build.pkr.hcl"),
        "{e:?}"
    );
    let rec = &world.manager.list(&Default::default()).unwrap()[0];
    assert_eq!(rec.state(), State::Failed);
    assert!(rec
        .reason()
        .unwrap()
        .starts_with("failed: provision on local (ext.vm-packer): "));
    assert!(!world.data.join("vms").join(&rec.id).exists());
}

/// qemu that cannot start (a kernel file that is not a kernel): failed with
/// qemu's own words, nothing left.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn qemu_that_does_not_start_fails_with_its_output() {
    let image = require_vm("qemu_that_does_not_start_fails_with_its_output");
    let _vm = vm_lock();
    let bed = Bed::new();
    let junk = bed.dir.path().join("not-a-kernel");
    std::fs::write(&junk, b"this is not a kernel\n").unwrap();
    let mut config = image.config();
    config["kernel"] = json!(junk.display().to_string());
    let id = new_sandbox_id();
    let ctx = bed.ctx(&id, config);
    let e = VmPackerExtension::new().provision(&ctx).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProvisionFailed);
    assert!(e.message().contains("qemu did not start"), "{e}");
    assert!(
        e.message()
            .contains("qemu: linux kernel too old to load a ram disk"),
        "qemu's output is missing: {e}"
    );
    assert_gone(&bed.vm_dir(&id), &id);
}

/// qemu that exits while the guest boots (an initrd that is junk: the
/// kernel panics, qemu exits): failed at once with the console's tail,
/// through the manager, and nothing left.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn qemu_that_exits_during_boot_fails_with_the_console() {
    let image = require_vm("qemu_that_exits_during_boot_fails_with_the_console");
    let _vm = vm_lock();
    let junk_dir = tempfile::tempdir().unwrap();
    let junk = junk_dir.path().join("junk.img");
    std::fs::write(&junk, vec![0x5a; 4096]).unwrap();
    let world = World::new(
        &profile_toml(&image, &[], "2m", "").replace(&image.initrd(), &junk.display().to_string()),
        Hosts::local_only(),
        None,
    );
    let started = Instant::now();
    let e = world.manager.create(request(None), true).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "it should fail as soon as qemu exits"
    );
    assert_eq!(e.kind(), ErrorKind::ProvisionFailed);
    let m = e.message();
    assert!(m.contains("exited before SSH answered"), "{m}");
    assert!(m.contains("--- console.log (last lines):"), "{m}");
    assert!(m.contains("Kernel panic"), "{m}");
    let rec = &world.manager.list(&Default::default()).unwrap()[0];
    assert_eq!(rec.state(), State::Failed);
    assert!(
        rec.reason().unwrap().contains("Kernel panic"),
        "{:?}",
        rec.reason()
    );
    assert_gone(&world.data.join("vms").join(&rec.id), &rec.id);
}

/// SSH that never answers within the ready timeout: `Timeout` from the
/// extension, `failed` through the manager, with the console's tail;
/// nothing left running.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_that_never_answers_times_out() {
    let image = require_vm("ssh_that_never_answers_times_out");
    let _vm = vm_lock();
    // The guest's sshd listens on 22; a forward to 2222 never answers.
    // 15 s: long enough for the guest to have said something on its console.
    let world = World::new(
        &profile_toml(&image, &[], "15s", "guest_ssh_port = 2222"),
        Hosts::local_only(),
        None,
    );
    let started = Instant::now();
    let e = world.manager.create(request(None), true).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "the ready timeout is 15s, took {took:?}"
    );
    let m = e.message();
    assert!(m.contains("did not answer in time"), "{m}");
    assert!(m.contains("--- console.log (last lines):\n"), "{m}");
    assert!(
        m.contains("sandboxer-vm: up"),
        "the console's tail is missing: {m}"
    );
    let rec = &world.manager.list(&Default::default()).unwrap()[0];
    assert_eq!(rec.state(), State::Failed);
    assert!(rec
        .reason()
        .unwrap()
        .contains("wait_ready on local (ext.vm-packer)"));
    assert_gone(&world.data.join("vms").join(&rec.id), &rec.id);
}

/// A VM on a host with no record is an orphan for `inspect stale`, and
/// `reap-stale` stops it and removes its folder.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn orphan_vm_is_reaped() {
    let image = require_vm("orphan_vm_is_reaped");
    let _vm = vm_lock();
    let world = World::new(
        &profile_toml(&image, &[], "2m", ""),
        Hosts::local_only(),
        None,
    );
    // A VM made behind the store's back (a create that crashed before it
    // recorded anything would look the same).
    let t: Arc<dyn sandboxer_core::transport::Transport> =
        Arc::new(sandboxer_transport::LocalTransport::new(world.data.clone()));
    let id = new_sandbox_id();
    let ctx = make_ctx(&t, &id, image.config(), READY_TIMEOUT);
    VmPackerExtension::new().provision(&ctx).await.unwrap();
    let vm_dir = world.data.join("vms").join(&id);
    assert!(!pids_naming(&format!("sandboxer-{id}")).is_empty());

    let report = world.manager.inspect_stale(Duration::ZERO).await.unwrap();
    let item = report
        .items
        .iter()
        .find(|i| i.sandbox_id == id)
        .unwrap_or_else(|| panic!("not flagged: {report:?}"));
    assert_eq!(item.kind, StaleKind::Orphan);
    assert_eq!(item.extension, VM_PACKER_EXTENSION_ID);
    let res = item.resource.as_ref().unwrap();
    assert!(res.running && res.kind == VM_RESOURCE_KIND, "{res:?}");

    let reaped = world
        .manager
        .reap_stale(Duration::ZERO, false)
        .await
        .unwrap();
    assert!(reaped.all_ok(), "{reaped:?}");
    assert_gone(&vm_dir, &id);
    let again = world.manager.inspect_stale(Duration::ZERO).await.unwrap();
    assert!(!again.items.iter().any(|i| i.sandbox_id == id), "{again:?}");
}

/// A folder whose qemu is gone (the host rebooted) is still listed, as not
/// running, and torn down; a qemu whose folder was removed is still found.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn stopped_and_folderless_vms_are_found() {
    let image = require_vm("stopped_and_folderless_vms_are_found");
    let _vm = vm_lock();
    let bed = Bed::new();
    let ext = VmPackerExtension::new();

    // A folder without a running qemu.
    let id = new_sandbox_id();
    let ctx = bed.ctx(&id, image.config());
    ext.provision(&ctx).await.unwrap();
    let pid: i32 = std::fs::read_to_string(bed.vm_dir(&id).join(files::PID))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    wait::within(Duration::from_secs(10), || {
        pids_naming(&format!("sandboxer-{id}"))
            .is_empty()
            .then_some(())
    });
    let listed = ext.list_resources(bed.transport.clone()).await.unwrap();
    let r = listed.iter().find(|r| r.sandbox_id == id).expect("listed");
    assert!(!r.running, "{r:?}");
    ext.teardown(&ctx, &Value::Null).await.unwrap();
    assert_gone(&bed.vm_dir(&id), &id);

    // A running qemu whose folder is gone (removed by hand).
    let id = new_sandbox_id();
    let ctx = bed.ctx(&id, image.config());
    ext.provision(&ctx).await.unwrap();
    std::fs::remove_dir_all(bed.vm_dir(&id)).unwrap();
    let listed = ext.list_resources(bed.transport.clone()).await.unwrap();
    let r = listed
        .iter()
        .find(|r| r.sandbox_id == id)
        .expect("listed by its process");
    assert!(r.running, "{r:?}");
    ext.teardown(&ctx, &Value::Null).await.unwrap();
    assert_gone(&bed.vm_dir(&id), &id);
}

/// A guest that ignores the power button (no ACPI) is stopped with
/// SIGTERM once `stop_timeout` has passed.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn a_guest_that_ignores_powerdown_is_stopped_after_the_stop_timeout() {
    let image = require_vm("a_guest_that_ignores_powerdown_is_stopped_after_the_stop_timeout");
    let _vm = vm_lock();
    let bed = Bed::new();
    let ext = VmPackerExtension::new();
    let mut config = image.config();
    config["append"] = json!("console=ttyS0 panic=1 quiet acpi=off");
    config["stop_timeout"] = json!("1s");
    let id = new_sandbox_id();
    let ctx = bed.ctx(&id, config);
    let h = ext.provision(&ctx).await.unwrap().handle;
    let started = Instant::now();
    ext.teardown(&ctx, &h).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "teardown took {took:?}"
    );
    assert_gone(&bed.vm_dir(&id), &id);
}

/// A port with a listener on the host is skipped; a port that is taken in
/// a way the listing does not show (bound, not listening) makes qemu fail
/// at launch, and another port is tried.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn taken_ports_are_skipped_or_retried() {
    let image = require_vm("taken_ports_are_skipped_or_retried");
    let _vm = vm_lock();
    let bed = Bed::new();
    let ext = VmPackerExtension::new();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listening = listener.local_addr().unwrap().port();
    let closed = sandboxer_testkit::net::ClosedPort::new().unwrap();
    let bound = closed.port();

    // Only the bound port in range: qemu cannot take it, nothing else left.
    let mut config = image.config();
    config["port_range"] = json!([bound, bound]);
    let id = new_sandbox_id();
    let e = ext.provision(&bed.ctx(&id, config)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProvisionFailed);
    assert!(
        e.message().contains(&format!(
            "no free port for the SSH forward in {bound}-{bound} (tried {bound})"
        )),
        "{e}"
    );
    assert_gone(&bed.vm_dir(&id), &id);

    // The listening port is never tried; the bound one fails and the next
    // one works.
    for (taken, range) in [
        (listening, [listening, listening + 1]),
        (bound, [bound, bound + 1]),
    ] {
        let mut config = image.config();
        config["port_range"] = json!(range);
        let id = new_sandbox_id();
        let ctx = bed.ctx(&id, config);
        let h = ext.provision(&ctx).await.unwrap().handle;
        assert_eq!(h["port"], json!(taken + 1), "{h}");
        ext.teardown(&ctx, &h).await.unwrap();
        assert_gone(&bed.vm_dir(&id), &id);
    }
    drop(listener);
}

/// Bad configs are refused before anything is made.
#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn bad_config_is_refused_up_front() {
    let bed = Bed::new();
    let ext = VmPackerExtension::new();
    let id = new_sandbox_id();
    let e = ext
        .provision(&bed.ctx(&id, json!({"image": "x.qcow2", "accel": "hvf"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    let e = ext
        .provision(&bed.ctx(
            &id,
            json!({"image": "x.qcow2", "ssh_key": "/nonexistent/id"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(!bed.data.join("vms").exists());
    // Teardown of what was never made, with a broken config: Ok.
    ext.teardown(&bed.ctx(&id, json!({"accel": 3})), &Value::Null)
        .await
        .unwrap();
    let e = ext
        .teardown(&bed.ctx("../etc", json!({})), &Value::Null)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

/// `packer validate` accepts the template of profile.vm-haskell-build,
/// rendered from the profile (offline).
#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn packer_validate_accepts_the_haskell_build_template() {
    let have_packer = Command::new("packer")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_packer {
        support::absent("packer_validate", "packer is not installed");
    }
    let out = Command::new(repo().join("scripts").join("vm-image"))
        .arg("packer-validate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "packer validate failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And a broken template is caught.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pkr.hcl");
    let text =
        std::fs::read_to_string(repo().join("images").join("haskell-build.pkr.hcl")).unwrap();
    std::fs::write(&bad, text.replace("disk_interface", "disk_interfaze")).unwrap();
    let out = Command::new(repo().join("scripts").join("vm-image"))
        .args(["packer-validate", "--template"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("disk_interfaze"));
}

/// The built-in profile names the template, the template makes the image
/// the profile boots, and the profile's config parses.
#[test]
fn the_profile_and_the_template_agree() {
    let profile: toml::Value = toml::from_str(
        &std::fs::read_to_string(
            repo()
                .join("sandboxer-core")
                .join("profiles")
                .join("vm-haskell-build.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    let config = serde_json::to_value(&profile["routes"][0]["config"]).unwrap();
    let cfg = sandboxer_ext_vm_packer::VmConfig::from_map(config.as_object().unwrap()).unwrap();
    let template_path = cfg.packer_template.as_deref().expect("packer_template");
    let template = std::fs::read_to_string(repo().join(template_path)).unwrap();
    let image = cfg.boot().unwrap().image.as_deref().unwrap();
    assert!(
        template.contains(&format!("default     = \"{image}\"")),
        "the template's vm_name default is not the profile's image {image}"
    );
}

/// Run `command` in the VM over SSH at `target` (the image's key); its
/// output.
async fn in_vm(image: &Image, target: &sandboxer_core::model::SshTarget, command: &str) -> String {
    let login = sandboxer_ext_vm_packer::ssh::SshLogin {
        host: target.host.clone(),
        port: target.port,
        user: target.user.clone(),
    };
    let auth = sandboxer_ext_vm_packer::ssh::SshAuth::KeyFile(image.key().into());
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    sandboxer_ext_vm_packer::ssh::login_attempt(&login, &auth, command, until)
        .await
        .unwrap_or_else(|why| {
            panic!(
                "`{command}` in the VM at {}:{}: {why}",
                target.host, target.port
            )
        })
        .output
}

/// The issue's check of a VM snapshot: a marker in a memory-backed
/// filesystem and a process started before the snapshot are there after
/// the restore, reached over SSH on the restored VM's own port.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn a_restored_vm_runs_on_with_its_memory_files_and_processes() {
    let image = require_vm("a_restored_vm_runs_on_with_its_memory_files_and_processes");
    let _vm = vm_lock();
    let bed = Bed::new();
    let ext = VmPackerExtension::new();
    let ready_by = || tokio::time::Instant::now() + READY_TIMEOUT;
    let ctx = bed.ctx(&new_sandbox_id(), image.config());
    let h = ext.provision(&ctx).await.unwrap().handle;
    let r = ext.wait_ready(&ctx, &h, ready_by()).await.unwrap();
    let h = r.handle.unwrap_or(h);
    let ssh = r.reachability.ssh.unwrap();
    let started = in_vm(
        &image,
        &ssh,
        "mkdir -p /mnt/ram && mount -t tmpfs tmpfs /mnt/ram && echo marker-in-ram > /mnt/ram/marker \
         && { sleep 100000 </dev/null >/dev/null 2>&1 & echo $! > /mnt/ram/sleeper.pid; } \
         && cat /mnt/ram/sleeper.pid",
    )
    .await;
    let sleeper: u32 = started.trim().parse().unwrap();

    // Paused, then saved: the snapshot of a paused VM leaves it paused.
    ext.pause(&ctx, &h).await.unwrap();
    let snap = sandboxer_core::snapshot::new_snapshot_id();
    let made = ext.snapshot(&ctx, &h, &snap).await.unwrap();
    assert!(made.size_bytes.unwrap() > 0, "{made:?}");
    let resumed = ext.resume(&ctx, &h, ready_by()).await.unwrap();
    assert_eq!(resumed.reachability.ssh.as_ref().unwrap().port, ssh.port);
    ext.teardown(&ctx, &h).await.unwrap();

    let mut again = bed.ctx(&new_sandbox_id(), image.config());
    again.restore = Some(sandboxer_core::extension::Restore {
        snapshot_id: snap.clone(),
        handle: made.handle.clone(),
    });
    let h2 = ext.provision(&again).await.unwrap().handle;
    let r2 = ext.wait_ready(&again, &h2, ready_by()).await.unwrap();
    let ssh2 = r2.reachability.ssh.clone().unwrap();
    assert_ne!(ssh2.port, ssh.port, "the restored VM has a port of its own");
    let seen = in_vm(
        &image,
        &ssh2,
        &format!("cat /mnt/ram/marker; kill -0 {sleeper} && echo sleeper-alive"),
    )
    .await;
    assert_eq!(seen, "marker-in-ram\nsleeper-alive");
    ext.teardown(&again, &r2.handle.unwrap_or(h2))
        .await
        .unwrap();

    // A route whose machine differs cannot restore it.
    let mut other = image.config();
    other["memory_mb"] = json!(384);
    let mut wrong = bed.ctx(&new_sandbox_id(), other);
    wrong.restore = again.restore.clone();
    let err = ext.provision(&wrong).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("memory_mb is 384"), "{err}");

    ext.delete_snapshot(bed.transport.clone(), &snap, &made.handle)
        .await
        .unwrap();
    assert!(!bed.data.join("vm-snapshots").join(&snap).exists());
    assert!(pids_naming(&bed.data.display().to_string()).is_empty());
}
