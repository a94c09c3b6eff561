//! Sizes as docker writes them: `10GB`, `512m`, `1GiB` in (flags such as `--memory` and
//! `--keep-storage`), `1.5MB` out (columns and messages), in decimal units.

/// A size that does not parse; the message names the flag it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SizeError(String);

/// `bytes` in the largest decimal unit that keeps it at least 1, to 3 decimals.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[unit]
    }
}

/// `10GB`, `512MB`, `1.5G`, `2048` (bytes) → bytes; `flag` names the option in errors.
pub fn parse_size(flag: &str, s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| SizeError(format!("{flag} {s:?}: not a size")))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(SizeError(format!("{flag} {s:?}: unknown unit {other:?}"))),
    };
    Ok((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(
            parse_size("--keep-storage", "10GB").unwrap(),
            10_000_000_000
        );
        assert_eq!(parse_size("--keep-storage", "512mb").unwrap(), 512_000_000);
        assert_eq!(parse_size("--keep-storage", "1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("--keep-storage", "2048").unwrap(), 2048);
        assert!(parse_size("--keep-storage", "ten").is_err());
        assert!(parse_size("--keep-storage", "1XB").is_err());
    }

    #[test]
    fn human_sizes_are_short() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_500_000), "1.5MB");
        assert_eq!(human_size(2_000), "2kB");
    }
}
