//! Fuzz target: what a registry controls, as kiln parses it. Arbitrary bytes through the
//! manifest/index/config parsers (and, for what parses, platform choice and canonical
//! re-serialisation), the token-endpoint response, the error-body message and the
//! `WWW-Authenticate` challenge. Any panic is a finding; an `Err` is fine.
#![no_main]

use kiln_image::oci::{ManifestKind, canonical_json, parse_manifest_or_index};
use kiln_image::{parse_config, parse_manifest};
use kiln_registry::{
    Challenge, PlatformSpec, choose_platform, error_body_message, parse_token_response,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_manifest_or_index(data) {
        Ok(ManifestKind::Manifest(m)) => {
            let _ = canonical_json(&m);
        }
        Ok(ManifestKind::Index(i)) => {
            let _ = canonical_json(&i);
            for want in ["linux/amd64", "linux/arm/v7"] {
                if let Ok(p) = PlatformSpec::parse(want) {
                    let _ = choose_platform(&i.manifests, &p);
                }
            }
        }
        Err(_) => {}
    }
    if let Ok(m) = parse_manifest(data) {
        let _ = canonical_json(&m);
    }
    if let Ok(c) = parse_config(data) {
        let _ = canonical_json(&c);
    }
    let _ = parse_token_response(data);
    let _ = error_body_message("Bad Request", data);
    let text = String::from_utf8_lossy(data);
    if let Some(c) = Challenge::parse(&text) {
        let _ = c.param("realm");
    }
});
