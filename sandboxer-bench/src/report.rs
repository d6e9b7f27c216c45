//! `docs/benchmarks.md`: one file, one section per benchmark, each between
//! `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`. A run replaces only its
//! own section and keeps every other byte of the file.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// What a new file starts with.
pub const HEADER: &str = "# Benchmarks

Measured, not assumed: each section below was written by a real run of
`scripts/bench SECTION` (all sections: `scripts/bench`), which builds the
release binaries and runs `target/release/sandboxer-bench SECTION --out
docs/benchmarks.md`. That run replaces its own section, between the
`<!-- bench:SECTION -->` markers, and keeps the rest of this file. Each
section names its machine and the load average around the run: the
machines are small (2 CPUs) and often shared, so read the figures with
the load beside them, and remake them rather than trust old ones.
";

fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- bench:{name} -->"),
        format!("<!-- /bench:{name} -->"),
    )
}

/// `doc` with the section `name` set to `body`: replaced between its
/// markers when they are there, else appended. Everything else is kept.
pub fn replace_section(doc: &str, name: &str, body: &str) -> Result<String> {
    let (open, close) = markers(name);
    let section = format!("{open}\n{}\n{close}", body.trim_matches('\n'));
    let starts: Vec<usize> = doc.match_indices(&open).map(|(i, _)| i).collect();
    match starts.as_slice() {
        [] => {
            let mut out = doc.trim_end_matches('\n').to_string();
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(&section);
            out.push('\n');
            Ok(out)
        }
        [start] => {
            let Some(len) = doc[*start..].find(&close) else {
                bail!("`{open}` has no `{close}` after it");
            };
            let end = start + len + close.len();
            if doc[end..].contains(&open) || doc[..*start].contains(&close) {
                bail!("the markers of section `{name}` are out of order");
            }
            Ok(format!("{}{section}{}", &doc[..*start], &doc[end..]))
        }
        _ => bail!("section `{name}` appears {} times", starts.len()),
    }
}

/// Write section `name` into the file `path` (made with [`HEADER`] when
/// missing), through a temp file and a rename.
pub fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HEADER.to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = replace_section(&old, name, body)
        .with_context(|| format!("in {} (fix the markers by hand)", path.display()))?;
    sandboxer_core::fsutil::replace(path, 0o644, new.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_then_replaces_only_its_own_section() {
        let doc = replace_section(HEADER, "foundation", "## foundation\n\nv1\n").unwrap();
        assert!(doc.starts_with(HEADER.trim_end()));
        assert!(doc.ends_with(
            "<!-- bench:foundation -->\n## foundation\n\nv1\n<!-- /bench:foundation -->\n"
        ));
        let doc = replace_section(&doc, "compose", "## compose\n\nc1").unwrap();
        // Text someone wrote between sections stays.
        let doc = doc.replace(
            "<!-- bench:compose -->",
            "A note by hand.\n\n<!-- bench:compose -->",
        );
        let again = replace_section(&doc, "foundation", "## foundation\n\nv2").unwrap();
        assert_eq!(again, doc.replace("\nv1\n", "\nv2\n"));
        assert!(again.contains(
            "A note by hand.\n\n<!-- bench:compose -->\n## compose\n\nc1\n<!-- /bench:compose -->"
        ));
        // Idempotent.
        assert_eq!(
            replace_section(&again, "foundation", "## foundation\n\nv2").unwrap(),
            again
        );
        // A name that is a prefix of another is its own section.
        let with_f = replace_section(&again, "f", "x").unwrap();
        assert!(with_f.contains("<!-- bench:foundation -->\n## foundation\n\nv2\n"));
        assert!(with_f.ends_with("<!-- bench:f -->\nx\n<!-- /bench:f -->\n"));
    }

    #[test]
    fn broken_markers_are_refused() {
        let open_only = "<!-- bench:foundation -->\nold\n";
        assert!(replace_section(open_only, "foundation", "new").is_err());
        let twice = "<!-- bench:a -->\n<!-- /bench:a -->\n<!-- bench:a -->\n<!-- /bench:a -->\n";
        assert!(replace_section(twice, "a", "new").is_err());
        let reversed = "<!-- /bench:a -->\n<!-- bench:a -->\nx\n<!-- /bench:a -->\n";
        assert!(replace_section(reversed, "a", "new").is_err());
    }

    #[test]
    fn writes_a_new_file_with_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("benchmarks.md");
        write_section(&path, "foundation", "## foundation").unwrap();
        write_section(&path, "foundation", "## foundation\n\nagain").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Benchmarks\n"));
        assert_eq!(text.matches("<!-- bench:foundation -->").count(), 1);
        assert!(text.contains("again"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
