//! Shell completions and man pages, generated from the same clap
//! definitions as the commands: the bash script loads in a real bash and
//! completes a subcommand and a flag; the man pages name every command.

use crate::home;

/// What bash completes for `words` (the last one partial).
fn complete(script: &str, words: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sandboxer.bash");
    std::fs::write(&file, script).unwrap();
    let words_sh: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = words.join(" ");
    let prog = format!(
        "source {file}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT={point}; \
         _sandboxer sandboxer '{cur}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file = file.display(),
        words = words_sh.join(" "),
        cword = words.len() - 1,
        point = line.len(),
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &prog])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_bash_completion_loads_and_completes_commands_and_flags() {
    let h = home();
    let script = h.run(&["completions", "bash"]).ok().stdout;
    assert!(script.contains("complete -F _sandboxer"), "{script}");
    let got = complete(&script, &["sandboxer", "cre"]);
    assert_eq!(got, ["create", "credits"]);
    let got = complete(&script, &["sandboxer", "reap-stale", "--dr"]);
    assert_eq!(got, ["--dry-run"]);
    for shell in ["zsh", "fish"] {
        let s = h.run(&["completions", shell]).ok().stdout;
        assert!(s.contains("reap-stale"), "{shell}: {s}");
    }
    let bad = h.run(&["completions", "tcsh"]).expect_code(2);
    assert!(bad.stderr.contains("possible values"), "{}", bad.stderr);
}

#[test]
fn man_pages_cover_every_command() {
    let h = home();
    let page = h.run(&["man"]).ok().stdout;
    assert!(page.contains(".TH sandboxer 1"), "{page}");
    assert!(
        page.contains("reap\\-stale") || page.contains("reap-stale"),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    h.run(&["man", dir.path().to_str().unwrap()]).ok();
    for p in [
        "sandboxer.1",
        "sandboxer-create.1",
        "sandboxer-credits-grant.1",
        "sandboxer-serve.1",
    ] {
        let text =
            std::fs::read_to_string(dir.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{p}");
    }
    assert!(
        !dir.path().join("sandboxer-__finish-create.1").exists(),
        "hidden commands stay hidden"
    );
}
