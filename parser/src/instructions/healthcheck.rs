//! HEALTHCHECK: `NONE`, or `CMD` with its options (interval, timeout, start period and
//! interval as Go durations; retries).

use super::args::node_err;
use super::flags::FlagType::Str;
use super::flags::Flags;
use super::types::*;
use crate::error::ParseError;
use crate::goformat::{parse_duration, quote};
use crate::syntax::Node;

pub(super) fn parse_healthcheck(node: &Node) -> Result<HealthcheckCommand, ParseError> {
    if node.args.is_empty() {
        return Err(node_err(node, "HEALTHCHECK requires at least one argument"));
    }
    let typ = node.args[0].to_ascii_uppercase();
    let args = &node.args[1..];
    let mut hc = HealthcheckCommand {
        test: Vec::new(),
        interval: 0,
        timeout: 0,
        start_period: 0,
        start_interval: 0,
        retries: 0,
    };
    if typ == "NONE" {
        if !args.is_empty() {
            return Err(node_err(node, "HEALTHCHECK NONE takes no arguments"));
        }
        hc.test = vec![typ];
        return Ok(hc);
    }
    let f = Flags::parse(
        &node.flags,
        &[
            ("interval", Str),
            ("timeout", Str),
            ("start-period", Str),
            ("start-interval", Str),
            ("retries", Str),
        ],
    )?;
    if typ != "CMD" {
        return Err(node_err(
            node,
            format!("Unknown type {} in HEALTHCHECK (try CMD)", quote(&typ)),
        ));
    }
    let cmd: Vec<String> = if node.json {
        args.to_vec()
    } else if args.is_empty() {
        Vec::new()
    } else {
        vec![args.join(" ")]
    };
    if cmd.is_empty() {
        return Err(node_err(node, "Missing command after HEALTHCHECK CMD"));
    }
    let t = if node.json { "CMD" } else { "CMD-SHELL" };
    hc.test = std::iter::once(t.to_string()).chain(cmd).collect();
    let interval = |name: &str| -> Result<i64, ParseError> {
        let Some(v) = f.str(name) else { return Ok(0) };
        if v.is_empty() {
            return Ok(0);
        }
        let d = parse_duration(&v).map_err(|e| node_err(node, e))?;
        if d == 0 {
            return Ok(0);
        }
        if d < 1_000_000 {
            return Err(node_err(
                node,
                format!("Interval {} cannot be less than 1ms", quote(name)),
            ));
        }
        Ok(d)
    };
    hc.interval = interval("interval")?;
    hc.timeout = interval("timeout")?;
    hc.start_period = interval("start-period")?;
    hc.start_interval = interval("start-interval")?;
    if let Some(r) = f.str("retries").filter(|r| !r.is_empty()) {
        let n: i64 = r.parse().map_err(|_| {
            node_err(
                node,
                format!("strconv.ParseInt: parsing {}: invalid syntax", quote(&r)),
            )
        })?;
        if n < 0 {
            return Err(node_err(
                node,
                format!("--retries cannot be negative ({n})"),
            ));
        }
        hc.retries = n;
    }
    Ok(hc)
}
