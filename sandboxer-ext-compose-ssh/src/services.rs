//! The service names of a compose file, read here from the repo instead of
//! asking `compose config --services` on the host: that costs one more
//! compose run per create, and compose v1 is a Python program that takes
//! half a second or more just to start. Pure.
//!
//! Only the plain shape is read: a top-level `services:` block mapping
//! whose keys are plain (or simply quoted) service names, in a single YAML
//! document indented with spaces. Anything else (flow style, anchors,
//! merge keys or tags at that level, tabs, several documents, a top-level
//! `include`, no `services`) answers `None`, and the caller asks compose
//! on the host, which reads every form.

/// The services of the compose file `text`, in file order, when its shape
/// is plain enough to read without a YAML parser; else `None`.
pub(crate) fn plain_services(text: &str) -> Option<Vec<String>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut services = Vec::new();
    let mut in_services = false;
    let mut seen_services = false;
    // The indentation of the service keys, once the first one is seen.
    let mut key_indent: Option<usize> = None;
    let mut seen_content = false;
    for line in text.lines() {
        let content = line.trim_start_matches(' ');
        if content.starts_with('\t') {
            return None;
        }
        let stripped = content.trim_end();
        if stripped.is_empty() || stripped.starts_with('#') {
            continue;
        }
        let indent = line.len() - content.len();
        if indent == 0 {
            if stripped == "---" && !seen_content {
                seen_content = true;
                continue;
            }
            seen_content = true;
            if stripped.starts_with("---") || stripped.starts_with("...") {
                return None;
            }
            in_services = false;
            let (key, rest) = mapping_key(stripped)?;
            match key.as_str() {
                "services" => {
                    if seen_services || !rest.is_empty() {
                        // Twice, or `services: {...}` / `services: *x`.
                        return None;
                    }
                    seen_services = true;
                    in_services = true;
                }
                "include" => return None,
                _ => {}
            }
            continue;
        }
        seen_content = true;
        if !in_services {
            continue;
        }
        let want = *key_indent.get_or_insert(indent);
        if indent < want {
            // A line between the top level and the service keys.
            return None;
        }
        if indent > want {
            continue; // inside a service
        }
        let (key, _) = mapping_key(stripped)?;
        if !is_service_name(&key) || services.contains(&key) {
            return None;
        }
        services.push(key);
    }
    (seen_services && !services.is_empty()).then_some(services)
}

/// `KEY: rest` (or `KEY:` alone) with a plain or simply quoted key; the
/// rest without a trailing comment. `None` for anything else.
fn mapping_key(line: &str) -> Option<(String, String)> {
    let (key, after) = match line.chars().next()? {
        q @ ('"' | '\'') => {
            let end = line[1..].find(q)? + 1;
            let key = &line[1..end];
            if key.contains(['\\', '"', '\'']) {
                return None;
            }
            (key.to_string(), &line[end + 1..])
        }
        _ => {
            let colon = line.find(':')?;
            (line[..colon].trim_end().to_string(), &line[colon..])
        }
    };
    let after = after.trim_start_matches(' ');
    let rest = after.strip_prefix(':')?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let rest = rest.trim();
    let rest = if rest.starts_with('#') { "" } else { rest };
    if key.is_empty() || key.starts_with(['&', '*', '!', '?', '<', '-', '[', '{']) {
        return None;
    }
    Some((key, rest.to_string()))
}

/// What compose accepts as a service name.
fn is_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_plain_shape() {
        let text = "# the e2e stack\nversion: \"3.8\"\nx-common: &common\n  init: true\n\nservices:\n  web:\n    image: busybox\n    command: [\"httpd\", \"-f\"]\n    environment:\n      A: b\n    healthcheck:\n      test: |\n        wget -q localhost\n\n  # the database\n  \"db\":\n    <<: *common\n    image: postgres\n  worker-1: {image: x}\nvolumes:\n  data: {}\n";
        assert_eq!(
            plain_services(text),
            Some(vec!["web".into(), "db".into(), "worker-1".into()])
        );
        assert_eq!(
            plain_services(
                "---\nservices:\n    a:\n        image: x\n    b.c:\n        image: y\n"
            ),
            Some(vec!["a".into(), "b.c".into()])
        );
        assert_eq!(
            plain_services("services:\r\n  web:\r\n    image: x\r\n"),
            Some(vec!["web".into()])
        );
        assert_eq!(
            plain_services("services:  # the stack\n  web :   # comment\n    image: x\n"),
            Some(vec!["web".into()])
        );
    }

    #[test]
    fn the_example_repo_is_plain() {
        let text = include_str!("../../examples/compose-e2e-repo/docker-compose.e2e.yml");
        assert_eq!(plain_services(text), Some(vec!["web".to_string()]));
    }

    #[test]
    fn anything_unusual_is_left_to_compose() {
        for text in [
            "",
            "version: '3'\n",
            "services: {web: {image: x}}\n",
            "services: *all\n",
            "{\"services\": {\"web\": {\"image\": \"x\"}}}\n",
            "services:\n  <<: *base\n  web:\n    image: x\n",
            "services:\n  ? web\n  : image: x\n",
            "services:\n\tweb:\n\t\timage: x\n",
            "services:\n  web:\n    image: x\nservices:\n  db:\n    image: y\n",
            "services:\n  web:\n    image: x\n  web:\n    image: y\n",
            "services:\n    web:\n      image: x\n  db:\n    image: y\n",
            "include:\n  - other.yml\nservices:\n  web:\n    image: x\n",
            "services:\n  web:\n    image: x\n---\nservices:\n  db:\n    image: y\n",
            "services:\n  'we\\b':\n    image: x\n",
            "services:\n  we b:\n    image: x\n",
            "services:\n  !!str web:\n    image: x\n",
            "services:\n  &a web:\n    image: x\n",
            "services:\n  - web\n",
            "services:\n",
            "services:\n  web:image\n",
        ] {
            assert_eq!(plain_services(text), None, "{text:?}");
        }
    }
}
