//! Values of instructions checked as BuildKit (and the moby packages it uses) check
//! them while converting: EXPOSE port specs and STOPSIGNAL names
//! (COPY/ADD `--chmod` modes are [`crate::chmod`]'s).

/// docker/go-connections `nat.ParsePortSpec` reduced to the container side: every
/// `port/proto` a spec names (ranges expanded).
pub(crate) fn parse_port_spec(raw: &str) -> Result<Vec<String>, String> {
    let (rest, proto) = match raw.rfind('/') {
        Some(i) => (&raw[..i], &raw[i + 1..]),
        None => (raw, "tcp"),
    };
    let proto = if proto.is_empty() {
        "tcp".to_string()
    } else {
        proto.to_ascii_lowercase()
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    // `[ip:]hostPort:containerPort` — the container port is the last part.
    let container = match rest.rfind(':') {
        Some(i) => &rest[i + 1..],
        None => rest,
    };
    let bad = || format!("invalid containerPort: {container}");
    let (start, end) = match container.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = container.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if end < start {
        return Err(bad());
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN",
    "RTMAX",
];

/// moby/sys `signal.ParseSignal` acceptance.
pub(crate) fn valid_signal(raw: &str) -> bool {
    if let Ok(n) = raw.parse::<i64>() {
        return n != 0;
    }
    let up = raw.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if SIGNALS.contains(&name) {
        return true;
    }
    for base in ["RTMIN+", "RTMAX-"] {
        if let Some(n) = name.strip_prefix(base) {
            return n.parse::<u8>().is_ok_and(|n| (1..=15).contains(&n));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_normalize_to_port_proto() {
        assert_eq!(parse_port_spec("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_port_spec("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(
            parse_port_spec("127.0.0.1:8080:80").unwrap(),
            vec!["80/tcp"]
        );
        assert_eq!(parse_port_spec("7000-7002").unwrap().len(), 3);
        assert_eq!(
            parse_port_spec("x").unwrap_err(),
            "invalid containerPort: x"
        );
    }

    #[test]
    fn signals_are_checked() {
        assert!(valid_signal("SIGTERM") && valid_signal("9") && valid_signal("rtmin+3"));
        assert!(!valid_signal("SIGFOO") && !valid_signal("0"));
    }
}
