//! Durations as Flagger parses them for webhook `timeout`.
//!
//! Flagger calls Go's `time.ParseDuration`, and its CRD adds the start-anchored
//! pattern `^[0-9]+(m|s)`. We accept the intersection written with whole numbers:
//! `15s`, `1m30s`, `500ms`. Hand-written because the Go grammar is the contract:
//! humantime, the usual crate, accepts units Go rejects (`1day`, `2min`, spaces).

use std::time::Duration;

/// Parses `<digits><unit>` repeated, units `h`, `m`, `s`, `ms`, `us`, `µs`, `ns`,
/// with the first unit `m`, `s` or `ms` (Flagger's CRD pattern). `None` if invalid.
pub fn parse(input: &str) -> Option<Duration> {
    let mut rest = input;
    let mut total = Duration::ZERO;
    let mut first = true;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        if first && !matches!(unit, "m" | "s" | "ms") {
            return None;
        }
        first = false;
        let part = match unit {
            "h" => Duration::from_secs(number.checked_mul(3600)?),
            "m" => Duration::from_secs(number.checked_mul(60)?),
            "s" => Duration::from_secs(number),
            "ms" => Duration::from_millis(number),
            "us" | "µs" | "μs" => Duration::from_micros(number),
            "ns" => Duration::from_nanos(number),
            _ => return None,
        };
        total = total.checked_add(part)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_flagger_accepts() {
        let cases = [
            ("15s", 15_000),
            ("1m", 60_000),
            ("1m30s", 90_000),
            ("500ms", 500),
            ("0s", 0),
            ("10s500ms", 10_500),
            ("5m0s", 300_000),
            ("1m1h", 3_660_000),
        ];
        for (input, millis) in cases {
            assert_eq!(parse(input), Some(Duration::from_millis(millis)), "{input}");
        }
    }

    #[test]
    fn rejects_what_flagger_or_its_crd_rejects() {
        for input in [
            "",
            "5",
            "s",
            "1.5s",
            "-1s",
            "+1s",
            " 1s",
            "1s ",
            "1 s",
            "1h",
            "1d",
            "2min",
            "1S",
            "10us",
            "1m30",
            "abc",
            "99999999999999999999s",
            "1m 30s",
        ] {
            assert_eq!(parse(input), None, "{input:?}");
        }
    }
}
