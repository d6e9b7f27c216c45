//! Human durations as used in profiles and on the command line: `90s`, `30m`,
//! `2h`, `1d`, and sums of them such as `1h30m`. Pure.

use std::time::Duration;

/// Parse `90s`, `30m`, `2h`, `1d`, `1h30m`. A bare number is refused: the unit
/// is always written, so `30` is never silently seconds or minutes.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. `30m`, `2h` or `1h30m`".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut saw_unit = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => {
                return Err(format!(
                    "`{text}` is not a duration: unexpected `{c}`; use the units s, m, h, d as in `30m` or `1h30m`"
                ))
            }
        };
        if digits.is_empty() {
            return Err(format!(
                "`{text}` is not a duration: a unit without a number; write e.g. `30m`"
            ));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}` is not a duration: number too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        digits.clear();
        saw_unit = true;
    }
    if !digits.is_empty() || !saw_unit {
        return Err(format!(
            "`{text}` is not a duration: the number needs a unit (s, m, h or d), e.g. `{text}m`"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// The shortest form `parse_duration` reads back: `1h30m`, `45s`, `2d`.
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
    }

    #[test]
    fn refuses_bare_numbers_and_junk() {
        for bad in ["", "30", "m", "1x", "1.5h", "-1m", "h1"] {
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
