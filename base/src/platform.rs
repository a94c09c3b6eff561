//! The platform an image is for: `os/arch[/variant]` with Go's names, and this machine's.
//!
//! The parser (BUILDPLATFORM, TARGETPLATFORM), the image config and the registry (which
//! manifest of an index to pull) must agree on what "this machine" is, so it is worked
//! out once, here, the way containerd's `platforms.DefaultSpec` + `Normalize` give it:
//! Go's architecture names (`amd64`, `arm64`, `386`...), `arm` with its variant (`v7`, or
//! `v6` for an ARMv6 build), and no variant for `arm64` (containerd normalizes `v8` away;
//! it is only there when asked for).

use serde::Serialize;

/// `os/arch[/variant]`. Serialized with `variant` always present (`null` when none):
/// cache keys hold it in that form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// Go's name of the architecture (`amd64`, `arm64`...).
    pub architecture: String,
    /// The architecture variant (`v7`...), if it has one.
    pub variant: Option<String>,
}

/// A platform string that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
pub struct InvalidPlatform(pub String);

impl Platform {
    /// The platform kiln runs on (it builds for no other).
    pub fn host() -> Platform {
        let (architecture, variant) = go_arch(
            std::env::consts::ARCH,
            cfg!(target_endian = "little"),
            cfg!(target_feature = "v7"),
        );
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch` or `os/arch/variant` (no part empty).
    pub fn parse(s: &str) -> Result<Platform, InvalidPlatform> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(InvalidPlatform(s.to_string()));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl Platform {
    /// The platform as containerd normalizes it: `arm64/v8` is `arm64`.
    pub fn normalized(mut self) -> Platform {
        if self.architecture == "arm64" && self.variant.as_deref() == Some("v8") {
            self.variant = None;
        }
        self
    }

    /// Parses a platform as a user names it (`--platform`), normalized as containerd
    /// does, so that it compares equal to what kiln builds and records: `arm64/v8` is
    /// `arm64`, and this machine's os and architecture without a variant is this
    /// machine (`linux/arm` on an ARMv7 machine is `linux/arm/v7`).
    pub fn parse_normalized(s: &str) -> Result<Platform, InvalidPlatform> {
        let platform = Platform::parse(s)?.normalized();
        let host = Platform::host();
        if platform.os == host.os
            && platform.architecture == host.architecture
            && platform.variant.is_none()
        {
            return Ok(host);
        }
        Ok(platform)
    }

    /// Whether an image for this platform serves a build for `wanted`: the same os and
    /// architecture, and the same variant unless `wanted` names none (arm64's `v8` is
    /// arm64 without a variant, as containerd normalizes it).
    pub fn serves(&self, wanted: &Platform) -> bool {
        let arm64_v8 = |p: &Platform| {
            p.architecture == "arm64" && p.variant.as_deref().is_none_or(|v| v == "v8")
        };
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && (self.variant == wanted.variant
                || arm64_v8(self) && arm64_v8(wanted)
                || wanted.variant.is_none())
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Go's architecture name and variant for a Rust target architecture (`ARCH`), its
/// endianness, and, for 32-bit arm, whether it is built for ARMv7.
pub fn go_arch(rust_arch: &str, little_endian: bool, arm_v7: bool) -> (&str, Option<&'static str>) {
    match rust_arch {
        "x86_64" => ("amd64", None),
        "x86" => ("386", None),
        "aarch64" => ("arm64", None),
        "arm" if arm_v7 => ("arm", Some("v7")),
        "arm" => ("arm", Some("v6")),
        "powerpc64" if little_endian => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "loongarch64" => ("loong64", None),
        "mips64" if little_endian => ("mips64le", None),
        "mips" if little_endian => ("mipsle", None),
        other => (other, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_serves_its_platform_and_any_variant_when_none_is_asked() {
        let p = |s: &str| Platform::parse(s).unwrap();
        assert!(p("linux/arm/v7").serves(&p("linux/arm/v7")));
        assert!(!p("linux/arm/v6").serves(&p("linux/arm/v7")));
        assert!(p("linux/arm/v6").serves(&p("linux/arm")));
        assert!(p("linux/arm64/v8").serves(&p("linux/arm64")));
        assert!(p("linux/arm64").serves(&p("linux/arm64/v8")));
        assert!(!p("linux/amd64").serves(&p("linux/arm64")));
        assert!(!p("windows/amd64").serves(&p("linux/amd64")));
    }

    #[test]
    fn normalized_platforms_drop_arm64s_v8_and_name_this_machine_in_full() {
        assert_eq!(
            Platform::parse_normalized("linux/arm64/v8")
                .unwrap()
                .to_string(),
            "linux/arm64"
        );
        let host = Platform::host();
        let bare = format!("{}/{}", host.os, host.architecture);
        assert_eq!(Platform::parse_normalized(&bare).unwrap(), host);
        assert_eq!(
            Platform::parse_normalized("linux/arm/v6")
                .unwrap()
                .to_string(),
            "linux/arm/v6"
        );
        assert!(Platform::parse_normalized("linux").is_err());
    }

    #[test]
    fn architectures_get_go_names_and_arm_its_variant() {
        assert_eq!(go_arch("x86_64", true, false), ("amd64", None));
        assert_eq!(go_arch("aarch64", true, false), ("arm64", None));
        assert_eq!(go_arch("arm", true, true), ("arm", Some("v7")));
        assert_eq!(go_arch("arm", true, false), ("arm", Some("v6")));
        assert_eq!(go_arch("powerpc64", true, false), ("ppc64le", None));
        assert_eq!(go_arch("powerpc64", false, false), ("ppc64", None));
        assert_eq!(go_arch("s390x", false, false), ("s390x", None));
        assert_eq!(go_arch("riscv64", true, false), ("riscv64", None));
    }

    #[test]
    fn host_is_linux_with_the_go_name_of_this_build() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(h.to_string(), "linux/amd64");
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(h.to_string(), "linux/arm64");
        }
    }

    #[test]
    fn parse_and_display_round_trip_and_refuse_other_shapes() {
        for s in ["linux/amd64", "linux/arm/v7"] {
            assert_eq!(Platform::parse(s).unwrap().to_string(), s);
        }
        for s in ["amd64", "linux/", "/amd64", "linux/arm/", "a/b/c/d", ""] {
            assert_eq!(
                Platform::parse(s),
                Err(InvalidPlatform(s.to_string())),
                "{s}"
            );
        }
    }

    /// Cache keys hold the platform as this JSON; its shape may not change.
    #[test]
    fn serialized_form_is_pinned() {
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!(
            crate::canonical_json::to_vec(&p).unwrap(),
            br#"{"architecture":"amd64","os":"linux","variant":null}"#
        );
    }
}
