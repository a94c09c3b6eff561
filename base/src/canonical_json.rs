//! Canonical JSON: the bytes kiln hashes (cache keys, configs, manifests, store records).
//!
//! Object keys sorted by byte order at every depth, no insignificant whitespace, strings
//! and numbers as serde_json writes them. The order of a struct's fields or a map's
//! insertion never reaches the bytes, so the same value always has the same digest
//! (serde_json is built with `preserve_order` in this workspace, so a plain `to_vec` would
//! not sort).

use serde::Serialize;
use serde_json::Value;

/// `value` as canonical JSON. Fails only where serde_json cannot make a `Value` of it (a
/// map with non-string keys, a `Serialize` impl that fails).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    let mut out = Vec::new();
    write_value(&value, &mut out);
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_value(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(v, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn canon(json: &str) -> String {
        let v: Value = serde_json::from_str(json).unwrap();
        String::from_utf8(to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn keys_are_sorted_by_bytes_at_every_depth() {
        assert_eq!(
            canon(r#"{"b":1,"a":{"d":[{"z":1,"y":2}],"c":2}}"#),
            r#"{"a":{"c":2,"d":[{"y":2,"z":1}]},"b":1}"#
        );
        // Byte order, not case-folded or by char width: "B" < "a" < "é".
        assert_eq!(canon(r#"{"é":1,"a":2,"B":3}"#), r#"{"B":3,"a":2,"é":1}"#);
    }

    /// The exact bytes for escapes, unicode, numbers and empty containers: store records,
    /// configs and cache keys were hashed from these bytes, so they may never change.
    #[test]
    fn bytes_of_scalars_are_pinned() {
        assert_eq!(
            canon(
                r#" { "s" : "a\"b\\c\n\u0001/é😀" , "n" : [ 0, -1, 1.5, 1e3, 18446744073709551615 ],
                    "t" : true, "f" : false, "z" : null, "o" : { }, "l" : [ ] } "#
            ),
            "{\"f\":false,\"l\":[],\"n\":[0,-1,1.5,1000.0,18446744073709551615],\"o\":{},\
             \"s\":\"a\\\"b\\\\c\\n\\u0001/é😀\",\"t\":true,\"z\":null}"
        );
    }

    #[test]
    fn a_hashmap_gives_the_same_bytes_whatever_its_order() {
        let mut a = HashMap::new();
        let mut b = HashMap::new();
        for i in 0..50 {
            a.insert(format!("k{i}"), i);
            b.insert(format!("k{}", 49 - i), 49 - i);
        }
        assert_eq!(to_vec(&a).unwrap(), to_vec(&b).unwrap());
    }

    #[test]
    fn non_string_map_keys_are_an_error() {
        let mut m = HashMap::new();
        m.insert(vec![1u8], 1);
        assert!(to_vec(&m).is_err());
    }
}
