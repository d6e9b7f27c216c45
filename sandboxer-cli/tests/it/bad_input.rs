//! Bad input: a clear message, its exit code, and the store byte-for-byte
//! unchanged. Human and JSON renderings are snapshotted.

use crate::{home, redact};

/// A home with one ready sandbox, so "unchanged" means something.
fn home_with_one() -> (sandboxer_testkit::home::Home, String) {
    let h = home();
    let rec = h.run(&["create", "--json"]).ok().json();
    (h, rec["id"].as_str().unwrap().to_string())
}

fn check(
    h: &sandboxer_testkit::home::Home,
    args: &[&str],
    code: i32,
    kind: &str,
    needle: &str,
) -> String {
    let before = h.store_dump();
    let human = h.run(args).expect_code(code);
    assert!(
        human.stderr.contains(needle),
        "`{}`: stderr should mention {needle:?}:\n{}",
        args.join(" "),
        human.stderr
    );
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let j = h.run(&json_args).expect_code(code).json();
    assert_eq!(j["error"]["kind"], kind, "{j:#}");
    assert_eq!(
        h.store_dump(),
        before,
        "`{}` changed the store",
        args.join(" ")
    );
    redact(&human.stderr)
}

#[test]
fn bad_inputs_are_refused_with_their_exit_code_and_leave_the_store_intact() {
    let (h, id) = home_with_one();
    let rendered = [
        check(
            &h,
            &["create", "--profile", "profile.nope"],
            3,
            "not_found",
            "profile.nope",
        ),
        check(
            &h,
            &["create", "--input", "colour=blue"],
            4,
            "invalid_input",
            "colour",
        ),
        check(
            &h,
            &["create", "--profile", "profile.compose-e2e"],
            4,
            "invalid_input",
            "repo",
        ),
        check(
            &h,
            &["create", "--ttl", "48h"],
            4,
            "invalid_input",
            "maximum",
        ),
        check(&h, &["create", "--ttl", "30"], 4, "invalid_input", "unit"),
        check(
            &h,
            &["create", "--actor", "boss:me"],
            4,
            "invalid_input",
            "boss",
        ),
        check(
            &h,
            &["get", "sbx-doesnotexist"],
            3,
            "not_found",
            "sbx-doesnotexist",
        ),
        check(
            &h,
            &["destroy", "sbx-doesnotexist"],
            3,
            "not_found",
            "sbx-doesnotexist",
        ),
    ];
    insta::assert_snapshot!("bad_input_messages", rendered.join("---\n"));
    h.run(&["destroy", &id]).ok();
}

#[test]
fn a_bad_actor_from_the_environment_is_named_as_coming_from_it() {
    let (mut h, id) = home_with_one();
    h.env.push(("SANDBOXER_ACTOR".into(), "boss:me".into()));
    check(
        &h,
        &["create"],
        4,
        "invalid_input",
        "SANDBOXER_ACTOR: bad actor `boss:me`",
    );
    // Given on the command line, it is the flag's value that is named.
    let r = h.run(&["create", "--actor", "agt:"]).expect_code(4);
    assert!(
        r.stderr.contains("bad actor `agt:`") && !r.stderr.contains("SANDBOXER_ACTOR"),
        "{}",
        r.stderr
    );
    h.env.retain(|(k, _)| k != "SANDBOXER_ACTOR");
    h.run(&["destroy", &id]).ok();
}

#[test]
fn a_malformed_user_profile_is_reported_with_file_line_and_column() {
    let (h, id) = home_with_one();
    let path = h.write_profile(
        "broken.toml",
        "id = \"profile.broken\"\nversion = \"one\"\ndescription = \"x\"\ndefault_ttl = \"2 fortnights\"\nmax_ttl = \"4h\"\nsurprise = true\n[[routes]]\nextension = \"ext.canary\"\n",
    );
    let before = h.store_dump();
    let r = h
        .run(&["create", "--profile", "profile.broken"])
        .expect_code(4);
    let shown = path.display().to_string();
    // Every problem at once, each with file:line:column.
    assert!(r.stderr.contains(&format!("{shown}:2:")), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("{shown}:4:")), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("{shown}:6:")), "{}", r.stderr);
    assert_eq!(h.store_dump(), before);
    insta::assert_snapshot!(
        "malformed_profile",
        redact(&r.stderr.replace(&shown, "[PROFILE]"))
    );
    // Reading commands keep working with the built-ins.
    h.run(&["list"]).ok();
    h.run(&["destroy", &id]).ok();
}

#[test]
fn a_corrupt_old_store_is_refused_and_nothing_is_imported() {
    let h = home();
    std::fs::create_dir_all(&h.data).unwrap();
    let old = h.data.join("sandboxes.json");
    for garbage in [
        &b"{ this is not json"[..],
        b"",
        b"{\"version\": 99, \"sandboxes\": []}",
    ] {
        std::fs::write(&old, garbage).unwrap();
        for args in [&["list"][..], &["create"], &["get", "sbx-aaaaaaaaaa"]] {
            let r = h.run(args).expect_code(8);
            assert!(
                r.stderr.contains("sandboxes.json") && r.stderr.contains("nothing was imported"),
                "the message names the file: {}",
                r.stderr
            );
            assert_eq!(std::fs::read(&old).unwrap(), garbage, "never overwritten");
            assert_eq!(
                h.store_dump().matches("sbx-").count(),
                0,
                "nothing imported"
            );
        }
    }
    let r = h.run(&["list", "--json"]).expect_code(8);
    assert_eq!(r.json()["error"]["kind"], "store_corrupt");
}

#[test]
fn a_file_that_is_not_our_database_or_is_newer_is_refused_untouched() {
    let h = home();
    std::fs::create_dir_all(&h.data).unwrap();
    // Not a database at all.
    std::fs::write(h.db_path(), b"this is not a database, just text\n").unwrap();
    let before = std::fs::read(h.db_path()).unwrap();
    for args in [&["list"][..], &["create"], &["db", "check"]] {
        let r = h.run(args).expect_code(8);
        assert!(r.stderr.contains("sandboxer.db"), "{}", r.stderr);
        assert_eq!(std::fs::read(h.db_path()).unwrap(), before, "untouched");
    }
    // A database of a newer schema: made with this build, then stamped
    // with a version from the future.
    std::fs::remove_file(h.db_path()).unwrap();
    h.run(&["list"]).ok();
    let conn = rusqlite::Connection::open(h.db_path()).unwrap();
    conn.execute(
        "UPDATE sandboxer_meta SET value = '99' WHERE key = 'version'",
        [],
    )
    .unwrap();
    drop(conn);
    let dump = h.store_dump();
    for args in [&["list", "--json"][..], &["create", "--json"]] {
        let r = h.run(args).expect_code(8);
        assert_eq!(r.json()["error"]["kind"], "store_corrupt");
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("99"));
        assert_eq!(h.store_dump(), dump, "left as it was");
    }
}

#[test]
fn usage_errors_exit_2_and_help_has_examples() {
    let h = home();
    h.run(&["frobnicate"]).expect_code(2);
    h.run(&["create", "--no-such-flag"]).expect_code(2);
    h.run(&["create", "--input", "novalue"]).expect_code(4);
    let help = h.run(&["--help"]).ok().stdout;
    assert!(help.contains("Exit codes"), "{help}");
    for cmd in ["create", "get", "list", "destroy", "recreate", "extend-ttl"] {
        let help = h.run(&[cmd, "--help"]).ok().stdout;
        assert!(
            help.contains("Example"),
            "`{cmd} --help` has examples:\n{help}"
        );
    }
}

#[test]
fn usage_errors_with_json_are_the_json_error_object() {
    let (h, _) = home_with_one();
    for args in [
        &["--json", "create", "--bogus"][..],
        &["create", "--bogus", "--json"],
        &["--json", "frobnicate"],
        &["get", "--json"],
    ] {
        let before = h.store_dump();
        let r = h.run(args).expect_code(2);
        let j = r.json();
        assert_eq!(j["error"]["kind"], "usage", "{args:?}: {j:#}");
        let msg = j["error"]["message"].as_str().unwrap();
        assert!(!msg.is_empty() && !msg.starts_with("error:"), "{msg}");
        assert!(
            j["error"]["hint"].as_str().unwrap().contains("--help"),
            "{j:#}"
        );
        assert_eq!(h.store_dump(), before);
    }
    let j = h
        .run(&["--json", "create", "--bogus"])
        .expect_code(2)
        .json();
    assert_eq!(j["error"]["message"], "unexpected argument '--bogus' found");
    // Without --json: clap's text on stderr, nothing on stdout.
    let r = h.run(&["create", "--bogus"]).expect_code(2);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(
        r.stderr.contains("unexpected argument '--bogus'"),
        "{}",
        r.stderr
    );
    // A value after `--` is not the flag.
    let r = h.run(&["create", "--bogus", "--", "--json"]).expect_code(2);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}

#[test]
fn a_typo_in_hosts_toml_stops_only_what_needs_hosts() {
    let (h, id) = home_with_one();
    std::fs::write(
        h.config.join("hosts.toml"),
        "[[hosts]]\nname = \"h1\"\naddress = \"127.0.0.9\"\nuser = \"x\"\nidentity_file = \"/k\"\nbogus_key = 1\n",
    )
    .unwrap();
    let at = "hosts.toml:6:1: unknown key `bogus_key`";
    for args in [
        &["list"][..],
        &["get", &id],
        &["credits", "balance"],
        &["inspect", "stale"],
        &["reap-stale"],
    ] {
        let r = h.run(args).expect_code(0);
        assert!(r.stderr.contains(at), "{args:?}: {}", r.stderr);
    }
    // Placing a sandbox or naming a configured host still refuses.
    let r = h.run(&["create"]).expect_code(4);
    assert!(r.stderr.contains(at), "{}", r.stderr);
    let r = h.run(&["create", "--host", "h1", "--json"]).expect_code(4);
    assert_eq!(r.json()["error"]["kind"], "invalid_config");
    // The local canary is destroyed as usual.
    let d = h.run(&["destroy", &id, "--json"]).expect_code(0).json();
    assert_eq!(d["state"], "destroyed");
}
