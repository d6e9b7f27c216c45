//! Human durations as used in profiles and on the command line: `90s`, `30m`,
//! `2h`, `1d`, and sums of them such as `1h30m`. Pure.

use std::time::Duration;

/// Parse `90s`, `30m`, `2h`, `1d`, `1h30m`, `500ms` (humantime's grammar:
/// also `2 hours`, `1min 30s`). A bare number is refused: the unit is always
/// written, so `30` is never silently seconds or minutes.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. `30m`, `2h` or `1h30m`".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not a duration: the number needs a unit (s, m, h or d), e.g. `{text}m`"
        ));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write e.g. `30m`, `1h30m` or `500ms`")
    })
}

/// The schema of a duration as written in records, requests and answers
/// (`#[schemars(with = "DurationText")]` on a field that serializes with
/// [`format_duration`] or is read with [`parse_duration`]).
pub struct DurationText;

impl schemars::JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration with units: `90s`, `30m`, `2h`, `1d`, `1h30m`, `500ms` (requests also take humantime's longer forms such as `2 hours`).",
            "pattern": "^([0-9]+(ms|s|m|h|d))+$",
            "example": "30m",
        })
    }
}

/// Serialize a duration as [`format_duration`] writes it
/// (`#[serde(serialize_with = "...")]`).
pub fn serialize_text<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// The shortest form `parse_duration` reads back: `1h30m`, `45s`, `2d`
/// (whole seconds; humantime's own formatter writes `1h 30m`, which would
/// change every record and message people already read).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("1ms").unwrap(), Duration::from_millis(1));
        assert_eq!(
            parse_duration("2 hours").unwrap(),
            Duration::from_secs(7200)
        );
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn refuses_bare_numbers_and_junk() {
        for bad in ["", "30", "m", "1x", "-1m", "h1", "2 fortnights"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(secs in 0u64..10_000_000) {
            let d = Duration::from_secs(secs);
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap_or_default(), d);
        }
    }
}
