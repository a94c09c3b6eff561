//! Texts BuildKit writes into image history (`created_by`): a RUN's command line with the
//! build ARGs in scope, and a HEALTHCHECK's options.

use crate::goformat::{format_duration, plain_list};
use crate::graph::Healthcheck;

/// `runCommandString`: `|N K=V ... argv...` when build ARGs are in scope.
pub(crate) fn run_command_string(
    argv: &[String],
    build_args: &[(String, Option<String>)],
    env: &dyn crate::expand::Env,
) -> String {
    // `build_args` holds each key once (lowering dedups in place), so no index is needed.
    let mut out = String::new();
    if !build_args.is_empty() {
        out.push_str(&format!("|{}", build_args.len()));
        for (k, v) in build_args {
            let value = env
                .get(k)
                .unwrap_or_else(|| v.as_deref().unwrap_or_default());
            out.push(' ');
            out.push_str(k);
            out.push('=');
            out.push_str(value);
        }
    }
    for a in argv {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(a);
    }
    out
}

/// `HEALTHCHECK %+v` of BuildKit's HealthcheckConfig.
pub(crate) fn healthcheck_string(h: &Healthcheck) -> String {
    format!(
        "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        plain_list(&h.test),
        format_duration(h.interval as i64),
        format_duration(h.timeout as i64),
        format_duration(h.start_period as i64),
        format_duration(h.start_interval as i64),
        h.retries
    )
}
