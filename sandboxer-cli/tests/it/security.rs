//! The HTTP surface as an attacker with an agent's token tries it
//! (docs/security.md has the table): `repo` paths on the server, hostile
//! upload archives, another actor's uploads, and idempotency keys shared
//! across actors. The real `sandboxer serve` on loopback, a real HTTP client.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

use crate::home;
use crate::http::{destroy_all, token, Reply, Served};

/// POST a raw archive to `/v1/uploads`.
fn upload(s: &Served, tok: &str, bytes: Vec<u8>) -> Reply {
    let resp = s
        .http
        .post(format!("{}/v1/uploads", s.base))
        .bearer_auth(tok)
        .header("content-type", "application/x-tar")
        .body(bytes)
        .send()
        .expect("POST /v1/uploads");
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    Reply {
        status,
        json: serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text:?}")),
        location: None,
    }
}

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h
}

/// A header with `name` written as is (the tar crate's builder refuses `..`
/// and absolute names; a hostile client does not).
fn raw(kind: tar::EntryType, name: &str, size: u64) -> tar::Header {
    let mut h = header(kind, size);
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    h
}

fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

/// Upload a tar of `files` (name, contents) as `tok`; the upload's id.
pub(crate) fn upload_of(s: &Served, tok: &str, files: &[(&str, &str)]) -> String {
    let body = tar_of(|b| {
        for (name, text) in files {
            b.append_data(
                &mut header(tar::EntryType::Regular, text.len() as u64),
                name,
                text.as_bytes(),
            )
            .unwrap();
        }
    });
    upload(s, tok, body).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Upload the folder `dir` as a tar.gz as `tok`; the answer (201).
pub(crate) fn upload_dir(s: &Served, tok: &str, dir: &Path) -> Value {
    upload(s, tok, tgz_of_dir(dir)).expect(201)
}

/// A tar.gz of the folder `dir`, as `tar -czf - -C DIR .` makes it.
fn tgz_of_dir(dir: &Path) -> Vec<u8> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(enc);
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap().finish().unwrap()
}

/// Entry names under `dir` (empty when it does not exist).
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_repo_path_over_http_gets_one_answer_whatever_is_there_and_nothing_is_read() {
    let h = home();
    let agt = token(&h, "agt:mapper");
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("repos");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    // A real compose repo outside the roots: the server must not pack it.
    std::fs::write(outside.join("docker-compose.e2e.yml"), "services: {}\n").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("sneaky")).unwrap();
    let root_s = root.display().to_string();
    let s = Served::start(
        &h,
        &["--reap-interval", "0s", "--repo-root", root_s.as_str()],
    );
    let attempts = [
        outside.display().to_string(),
        format!("{}/missing", outside.display()),
        outside.join("docker-compose.e2e.yml").display().to_string(),
        "/root".to_string(),
        "/etc".to_string(),
        "/nonexistent/folder".to_string(),
        "relative/repo".to_string(),
        ".".to_string(),
        "../../etc".to_string(),
        format!("{root_s}/../outside"),
        format!("{root_s}/app/../../outside"),
        format!("{root_s}/sneaky"),
        format!("{root_s}/missing"),
    ];
    let mut answers = BTreeSet::new();
    for repo in &attempts {
        let r = s.post(
            "/v1/sandboxes",
            &agt,
            json!({"profile": "profile.compose-e2e", "host": "local", "inputs": {"repo": repo}}),
        );
        assert_eq!(r.status, 400, "{repo}: {}", r.json);
        answers.insert(r.json.to_string());
    }
    assert_eq!(answers.len(), 1, "one answer for every path: {answers:?}");
    let answer: Value = serde_json::from_str(answers.iter().next().unwrap()).unwrap();
    assert_eq!(answer["code"], "invalid_input");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("upload (`upload:upl-...`) or a folder under one of the server's repo roots"),
        "{answer}"
    );
    // Nothing recorded, nothing packed or uploaded.
    assert_eq!(s.get("/v1/sandboxes", &agt).expect(200), json!([]));
    assert!(names(&h.data.join("work")).is_empty());
    assert_eq!(h.run(&["list", "--json"]).ok().json(), json!([]));
    drop(s);

    // Without --repo-root every path gets that answer, the root's own too.
    let s = Served::start(&h, &["--reap-interval", "0s"]);
    let r = s.post(
        "/v1/sandboxes",
        &agt,
        json!({"profile": "profile.compose-e2e", "host": "local", "inputs": {"repo": format!("{root_s}/app")}}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json.to_string(), *answers.iter().next().unwrap());
}

#[test]
fn hostile_archives_are_refused_whole_and_write_nothing_outside_the_upload() {
    let h = home();
    let agt = token(&h, "agt:uploader");
    let s = Served::start(&h, &["--reap-interval", "0s", "--max-upload", "8KiB"]);
    let escape = tempfile::tempdir().unwrap();
    let target = escape.path().join("pwned");
    let target_s = target.display().to_string();
    let ok = |b: &mut tar::Builder<Vec<u8>>| {
        b.append_data(
            &mut header(tar::EntryType::Regular, 2),
            "docker-compose.e2e.yml",
            &b"{}"[..],
        )
        .unwrap();
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a ../ entry",
            tar_of(|b| {
                ok(b);
                b.append(
                    &raw(tar::EntryType::Regular, "../../../pwned", 1),
                    &b"x"[..],
                )
                .unwrap();
            }),
            400,
            "a path with `..` is not taken",
        ),
        (
            "an absolute entry",
            tar_of(|b| {
                ok(b);
                b.append(&raw(tar::EntryType::Regular, &target_s, 1), &b"x"[..])
                    .unwrap();
            }),
            400,
            "an absolute path is not taken",
        ),
        (
            "a link escaping the root",
            tar_of(|b| {
                ok(b);
                b.append_link(
                    &mut header(tar::EntryType::Symlink, 0),
                    "sub/up",
                    "../../..",
                )
                .unwrap();
            }),
            400,
            "leads out of the upload",
        ),
        (
            "an absolute link, then a file through it",
            tar_of(|b| {
                b.append_link(
                    &mut header(tar::EntryType::Symlink, 0),
                    "esc",
                    escape.path(),
                )
                .unwrap();
                b.append_data(
                    &mut header(tar::EntryType::Regular, 1),
                    "esc/pwned",
                    &b"x"[..],
                )
                .unwrap();
            }),
            400,
            "is absolute",
        ),
        (
            "a device",
            tar_of(|b| {
                b.append_data(&mut header(tar::EntryType::Block, 0), "sda", &[][..])
                    .unwrap();
            }),
            400,
            "block device",
        ),
        (
            "over the limit",
            tar_of(|b| {
                b.append_data(
                    &mut header(tar::EntryType::Regular, 20_000),
                    "big",
                    &vec![7u8; 20_000][..],
                )
                .unwrap();
            }),
            413,
            "larger than the server takes",
        ),
        (
            "not an archive",
            b"GET / HTTP/1.1\r\n\r\n".repeat(20),
            400,
            "not a tar or tar.gz archive",
        ),
    ];
    for (what, body, status, says) in cases {
        let r = upload(&s, &agt, body);
        assert_eq!(r.status, status, "{what}: {}", r.json);
        let msg = r.json["message"].as_str().unwrap();
        assert!(msg.contains(says), "{what}: {msg}");
        assert!(!target.exists(), "{what} wrote {target_s}");
        assert!(names(escape.path()).is_empty(), "{what}");
        // The partial folder and body file are gone: no upload stays.
        assert!(
            names(&h.data.join("uploads")).is_empty(),
            "{what}: {:?}",
            names(&h.data.join("uploads"))
        );
    }
    assert_eq!(s.get("/v1/uploads", &agt).expect(200), json!([]));

    // A gzip bomb within the sent limit but not the unpacked one.
    let bomb = {
        use std::io::Write;
        let t = tar_of(|b| {
            b.append_data(
                &mut header(tar::EntryType::Regular, 200_000),
                "zeros",
                &vec![0u8; 200_000][..],
            )
            .unwrap();
        });
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&t).unwrap();
        enc.finish().unwrap()
    };
    assert!(bomb.len() < 8 * 1024);
    let r = upload(&s, &agt, bomb);
    assert_eq!(r.status, 413, "{}", r.json);
    assert!(names(&h.data.join("uploads")).is_empty());
}

#[test]
fn an_upload_is_its_owners_alone() {
    let h = home();
    let (a, b, adm) = (
        token(&h, "agt:alpha"),
        token(&h, "agt:beta"),
        token(&h, "adm:ops"),
    );
    let s = Served::start(&h, &["--reap-interval", "0s"]);
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("docker-compose.e2e.yml"), "services: {}\n").unwrap();
    std::fs::create_dir(repo.path().join("src")).unwrap();
    std::fs::write(repo.path().join("src/main.sh"), "echo hi\n").unwrap();
    let up = upload(&s, &a, tgz_of_dir(repo.path())).expect(201);
    let id = up["id"].as_str().unwrap().to_string();
    assert_eq!(up["use_as"], format!("upload:{id}"));
    assert_eq!(up["actor"], "agt:alpha");
    assert_eq!(up["files"], 2);
    assert_eq!(
        std::fs::read_to_string(h.data.join("uploads").join(&id).join("src/main.sh")).unwrap(),
        "echo hi\n"
    );
    // Listed for its owner and the operator, not for another agent.
    assert_eq!(s.get("/v1/uploads", &a).expect(200)[0]["id"], id.as_str());
    assert_eq!(s.get("/v1/uploads", &adm).expect(200)[0]["id"], id.as_str());
    assert_eq!(s.get("/v1/uploads", &b).expect(200), json!([]));
    // Another agent naming it gets the answer of a missing upload.
    let create = |tok: &str, value: &str| {
        s.post(
            "/v1/sandboxes",
            tok,
            json!({"profile": "profile.compose-e2e", "host": "local", "inputs": {"repo": value}}),
        )
    };
    let theirs = create(&b, &format!("upload:{id}"));
    let missing = create(&b, "upload:upl-aaaaaaaaaa");
    assert_eq!(theirs.status, 400, "{}", theirs.json);
    assert_eq!(
        theirs.json.to_string().replace(&id, "ID"),
        missing.json.to_string().replace("upl-aaaaaaaaaa", "ID")
    );
    assert_eq!(create(&b, "upload:../../etc").status, 400);
    assert_eq!(s.get("/v1/sandboxes", &b).expect(200), json!([]));
    // Delete: another agent's is 404, the owner's 200, then it is gone.
    let del = |tok: &str| s.call("DELETE", &format!("/v1/uploads/{id}"), Some(tok), None);
    assert_eq!(del(&b).status, 404);
    assert!(h.data.join("uploads").join(&id).is_dir());
    assert_eq!(del(&a).expect(200)["id"], id.as_str());
    assert!(!h.data.join("uploads").join(&id).exists());
    assert_eq!(del(&a).status, 404);
}

#[test]
fn unused_uploads_and_orphan_folders_are_swept_by_the_reaper() {
    let h = home();
    let agt = token(&h, "agt:forgetful");
    let adm = token(&h, "adm:ops");
    let s = Served::start(&h, &["--reap-interval", "0s", "--upload-retention", "0s"]);
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("f"), "x").unwrap();
    let id = upload(&s, &agt, tgz_of_dir(repo.path())).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A folder left by a crash between unpacking and recording.
    let orphan = h.data.join("uploads").join("upl-orphan2orphan");
    std::fs::create_dir_all(&orphan).unwrap();
    let seen = s
        .call("GET", "/v1/stale?grace=0s", Some(&adm), None)
        .expect(200);
    let listed: BTreeSet<&str> = seen["uploads"]
        .as_array()
        .unwrap_or_else(|| panic!("{seen}"))
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, BTreeSet::from([id.as_str(), "upl-orphan2orphan"]));
    assert!(orphan.exists(), "inspect removes nothing");
    let reaped = s
        .post("/v1/reap-stale", &adm, json!({"grace": "0s"}))
        .expect(200);
    assert_eq!(reaped["uploads"].as_array().unwrap().len(), 2, "{reaped}");
    assert!(names(&h.data.join("uploads")).is_empty());
    assert_eq!(s.get("/v1/uploads", &agt).expect(200), json!([]));
}

#[test]
fn two_actors_with_one_idempotency_key_each_get_their_own_sandbox() {
    let h = home();
    let (a, b) = (token(&h, "agt:first"), token(&h, "agt:second"));
    let s = Served::start(&h, &["--reap-interval", "0s"]);
    let with_key = |tok: &str, body: Value| {
        let resp = s
            .http
            .post(format!("{}/v1/sandboxes", s.base))
            .bearer_auth(tok)
            .header("idempotency-key", "shared-1")
            .body(body.to_string())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().unwrap())
    };
    let (st_a, rec_a) = with_key(&a, json!({}));
    assert_eq!(st_a, 201, "{rec_a}");
    let (st_b, rec_b) = with_key(&b, json!({}));
    assert_eq!(
        st_b, 201,
        "the same key from another actor is a new request: {rec_b}"
    );
    assert_ne!(rec_a["id"], rec_b["id"]);
    assert_eq!(rec_b["actor"], "agt:second");
    // Each actor's retry returns its own sandbox.
    let (st, again) = with_key(&a, json!({}));
    assert_eq!((st, &again["id"]), (200, &rec_a["id"]));
    let (st, again) = with_key(&b, json!({}));
    assert_eq!((st, &again["id"]), (200, &rec_b["id"]));
    // A different request under B's key names B's sandbox only.
    let (st, conflict) = with_key(&b, json!({"ttl": "7m"}));
    assert_eq!(st, 409, "{conflict}");
    let text = conflict.to_string();
    assert!(text.contains(rec_b["id"].as_str().unwrap()), "{text}");
    assert!(!text.contains(rec_a["id"].as_str().unwrap()), "{text}");
    drop(s);
    destroy_all(&h);
}
