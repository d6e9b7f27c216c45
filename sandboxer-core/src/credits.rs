//! Credit amounts: integers of micro-credits inside, decimals with at most 6
//! places outside. Pure.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One credit is 1,000,000 micro-credits.
pub const MICROS_PER_CREDIT: i64 = 1_000_000;

/// An amount of credits in micro-credits. Serialized as a decimal string
/// (`"25"`, `"0.5"`, `"0.000001"`) so no float ever touches money.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

impl Micros {
    pub const ZERO: Micros = Micros(0);

    pub fn from_credits(c: i64) -> Micros {
        Micros(c * MICROS_PER_CREDIT)
    }

    /// Parse a non-negative decimal with at most 6 places: `25`, `0.5`,
    /// `12.000001`. Refuses signs, exponents, more places and junk.
    pub fn parse_amount(s: &str) -> Result<Micros> {
        let bad = |why: &str| {
            Error::invalid_input(format!("bad amount `{s}`: {why}"))
                .with_hint("write a non-negative decimal with at most 6 places, e.g. `25` or `0.5`")
        };
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if int.is_empty() || !int.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad("not a plain decimal number"));
        }
        if s.contains('.') && frac.is_empty() {
            return Err(bad("nothing after the decimal point"));
        }
        if !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad("not a plain decimal number"));
        }
        if frac.len() > 6 {
            return Err(bad(
                "more than 6 decimal places (the unit is one micro-credit)",
            ));
        }
        let int: i64 = int.parse().map_err(|_| bad("too large"))?;
        let mut frac_micros: i64 = if frac.is_empty() {
            0
        } else {
            frac.parse().unwrap_or(0)
        };
        for _ in frac.len()..6 {
            frac_micros *= 10;
        }
        int.checked_mul(MICROS_PER_CREDIT)
            .and_then(|v| v.checked_add(frac_micros))
            .filter(|v| *v <= i64::MAX / 4)
            .map(Micros)
            .ok_or_else(|| bad("too large"))
    }

    /// In credits, as a float (for gauges and charts; never for
    /// arithmetic on balances).
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    pub fn as_credits(self) -> f64 {
        self.0 as f64 / MICROS_PER_CREDIT as f64
    }

    pub fn checked_add(self, o: Micros) -> Option<Micros> {
        self.0.checked_add(o.0).map(Micros)
    }
    pub fn checked_sub(self, o: Micros) -> Option<Micros> {
        self.0.checked_sub(o.0).map(Micros)
    }

    /// Price per hour times seconds, rounded up to the micro-credit (a
    /// started micro-credit is owed), saturating.
    pub fn per_hour_times_secs(self, secs: u64) -> Micros {
        let v = (self.0 as i128) * (secs as i128);
        let r = (v + 3599) / 3600;
        Micros(r.min(i64::MAX as i128) as i64)
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.0 < 0;
        let abs = self.0.unsigned_abs();
        let int = abs / MICROS_PER_CREDIT as u64;
        let frac = abs % MICROS_PER_CREDIT as u64;
        if neg {
            f.write_str("-")?;
        }
        if frac == 0 {
            write!(f, "{int}")
        } else {
            let s = format!("{frac:06}");
            write!(f, "{int}.{}", s.trim_end_matches('0'))
        }
    }
}

impl FromStr for Micros {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.strip_prefix('-') {
            Some(rest) => Micros::parse_amount(rest).map(|m| Micros(-m.0)),
            None => Micros::parse_amount(s),
        }
    }
}

impl Serialize for Micros {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl schemars::JsonSchema for Micros {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Amount".into()
    }

    /// The decimal string it serializes as.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Credits as a decimal string with at most 6 places; amounts a request gives are never negative.",
            "pattern": "^-?[0-9]+(\\.[0-9]{1,6})?$",
            "example": "2.5",
        })
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Micros::from_str(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(Micros::parse_amount("25").unwrap(), Micros(25_000_000));
        assert_eq!(Micros::parse_amount("0.5").unwrap(), Micros(500_000));
        assert_eq!(Micros::parse_amount("0.000001").unwrap(), Micros(1));
        for bad in [
            "-1",
            "1e3",
            "0.0000001",
            "abc",
            "",
            ".5",
            "5.",
            "+1",
            " 1",
            "1,5",
        ] {
            assert!(
                Micros::parse_amount(bad).is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn per_hour_rounds_up() {
        assert_eq!(
            Micros::from_credits(1).per_hour_times_secs(3600),
            Micros::from_credits(1)
        );
        assert_eq!(Micros(1).per_hour_times_secs(1), Micros(1));
        assert_eq!(Micros(3600).per_hour_times_secs(1), Micros(1));
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(v in 0i64..i64::MAX / 8) {
            prop_assert_eq!(Micros::from_str(&Micros(v).to_string()).unwrap(), Micros(v));
        }
    }
}
