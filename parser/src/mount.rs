//! `RUN --mount=...` values: CSV fields, case-insensitive keys, per-type key rules
//! (BuildKit `instructions/commands_runmount.go`).

use nom::{
    IResult, Parser,
    branch::alt,
    bytes::complete::{is_not, tag},
    character::complete::char,
    combinator::{all_consuming, map, opt},
    multi::{many0, separated_list1},
    sequence::delimited,
};

use crate::error::with_suggestion;

/// A mount as written, after expansion of its values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RawMount {
    pub kind: String,
    pub from: String,
    pub source: String,
    pub target: String,
    pub readonly: bool,
    pub id: String,
    pub sharing: String,
    pub required: bool,
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub env: Option<String>,
}

fn quoted_field(i: &str) -> IResult<&str, String> {
    map(
        delimited(
            char('"'),
            many0(alt((map(tag("\"\""), |_| "\""), is_not("\"")))),
            char('"'),
        ),
        |parts: Vec<&str>| parts.concat(),
    )
    .parse(i)
}

fn plain_field(i: &str) -> IResult<&str, String> {
    map(opt(is_not(",\"")), |s: Option<&str>| {
        s.unwrap_or_default().to_string()
    })
    .parse(i)
}

/// Splits one CSV record like Go's `encoding/csv` (quotes, `""` escapes).
pub(crate) fn split_csv(value: &str) -> Result<Vec<String>, String> {
    let value = value.trim_end_matches(['\r', '\n']);
    let mut parser = all_consuming(separated_list1(char(','), alt((quoted_field, plain_field))));
    match parser.parse(value) {
        Ok((_, fields)) => Ok(fields),
        Err(_) => Err(format!(
            "failed to parse csv mounts: parse error: bare \" in non-quoted-field in {value:?}"
        )),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// docker/go-units `RAMInBytes`: `64m`, `1.5g`, `512` (binary multiples).
fn ram_in_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let num_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let num: f64 = v[..num_end].parse().ok()?;
    let unit = v[num_end..].trim_start().to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    Some((num * mult) as u64)
}

const MOUNT_TYPES: &[&str] = &["bind", "cache", "tmpfs", "secret", "ssh"];
const ALL_KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "size",
    "env",
];

/// Parses one `--mount` value; `expand` expands each value (not `from`).
pub(crate) fn parse_mount(
    val: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<RawMount, String> {
    let fields = split_csv(val)?;
    let mut m = RawMount {
        kind: "bind".into(),
        ..RawMount::default()
    };
    let mut ro_auto = true;
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if m.kind == "secret" || m.kind == "ssh" => m.required = true,
                "required" => {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind
                    ));
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let value = if key == "from" {
            if value
                .char_indices()
                .any(|(i, c)| c == '$' && i + 1 < value.len())
            {
                return Err(
                    "'from' doesn't support variable expansion, define alias stage instead".into(),
                );
            }
            value
        } else {
            expand(&value)?
        };
        let bad = |key: &str| format!("invalid value for {key}: {value}");
        match key.as_str() {
            "type" => {
                let v = value.to_ascii_lowercase();
                if !MOUNT_TYPES.contains(&v.as_str()) {
                    return Err(with_suggestion(
                        format!("unsupported mount type {}", crate::goformat::quote(&value)),
                        &value,
                        MOUNT_TYPES,
                        true,
                    ));
                }
                m.kind = v;
            }
            "from" => m.from = value,
            "source" | "src" => m.source = value,
            "target" | "dst" | "destination" => m.target = value,
            "readonly" | "ro" => {
                m.readonly = parse_bool(&value).ok_or_else(|| bad(&key))?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&value).ok_or_else(|| bad(&key))?;
                ro_auto = false;
            }
            "required" => {
                if m.kind != "secret" && m.kind != "ssh" {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind
                    ));
                }
                m.required = parse_bool(&value).ok_or_else(|| bad(&key))?;
            }
            "size" => {
                if m.kind != "tmpfs" {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind
                    ));
                }
                m.size = Some(ram_in_bytes(&value).ok_or_else(|| bad(&key))?);
            }
            "id" => m.id = value,
            "sharing" => {
                let v = value.to_ascii_lowercase();
                let modes = ["shared", "private", "locked"];
                if !modes.contains(&v.as_str()) {
                    return Err(with_suggestion(
                        format!(
                            "unsupported sharing value {}",
                            crate::goformat::quote(&value)
                        ),
                        &value,
                        &modes,
                        true,
                    ));
                }
                m.sharing = v;
            }
            "mode" => {
                let mode = u32::from_str_radix(&value, 8)
                    .map_err(|_| format!("invalid value {value} for mode"))?;
                m.mode = Some(mode);
            }
            "uid" => {
                m.uid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for uid"))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for gid"))?,
                )
            }
            "env" => m.env = Some(value),
            _ => {
                return Err(with_suggestion(
                    format!("unexpected key '{key}' in '{field}'"),
                    &key,
                    ALL_KEYS,
                    true,
                ));
            }
        }
    }
    validate(&mut m, ro_auto)?;
    Ok(m)
}

fn validate(m: &mut RawMount, ro_auto: bool) -> Result<(), String> {
    let file_info_allowed = matches!(m.kind.as_str(), "secret" | "ssh" | "cache");
    if !file_info_allowed {
        for (name, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(format!(
                    "{name} not allowed for {} type mounts",
                    crate::goformat::quote(&m.kind)
                ));
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind.as_str(), "cache" | "tmpfs");
    }
    if m.kind == "secret" {
        if !m.from.is_empty() {
            return Err("secret mount should not have a from".into());
        }
        if !m.sharing.is_empty() {
            return Err("secret mount should not define sharing".into());
        }
        if m.source.is_empty() && m.target.is_empty() && m.id.is_empty() && m.env.is_none() {
            return Err("invalid secret mount. one of source, target required".into());
        }
        if !m.source.is_empty() && !m.id.is_empty() {
            return Err("both source and id can't be set".into());
        }
    }
    if m.env.is_some() && m.kind != "secret" {
        return Err(format!("unexpected key 'env' for mount type '{}'", m.kind));
    }
    if !m.sharing.is_empty() && m.kind != "cache" {
        return Err(format!("invalid cache sharing set for {} mount", m.kind));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(s: &str) -> Result<String, String> {
        Ok(s.to_string())
    }

    #[test]
    fn csv_handles_quotes() {
        assert_eq!(
            split_csv("a=b,\"c=d,e\",f").unwrap(),
            vec!["a=b", "c=d,e", "f"]
        );
        assert!(split_csv("a=\"b").is_err());
    }

    #[test]
    fn unknown_mount_key_suggests_a_known_one() {
        let err = parse_mount("type=cache,taget=/x", &mut ident).unwrap_err();
        assert_eq!(
            err,
            "unexpected key 'taget' in 'taget=/x' (did you mean target?)"
        );
    }

    #[test]
    fn bind_mounts_are_read_only_by_default() {
        let m = parse_mount("type=bind,target=/src", &mut ident).unwrap();
        assert!(m.readonly);
        let m = parse_mount("type=cache,target=/c,sharing=locked,mode=0700", &mut ident).unwrap();
        assert!(!m.readonly);
        assert_eq!(m.mode, Some(0o700));
        let err = parse_mount("type=bind,target=/x,uid=1", &mut ident).unwrap_err();
        assert_eq!(err, "uid not allowed for \"bind\" type mounts");
    }
}
