//! Whether a RUN for a platform can run here: natively, or through an emulator the kernel
//! starts for that platform's binaries (binfmt_misc, e.g. QEMU's user-mode emulators).
//!
//! Asked once per build, before any step runs, so that a build for a platform nothing here
//! can execute fails at once with what to install, instead of a RUN dying with
//! `exec format error` halfway through.
//!
//! A binfmt_misc entry matches an executable by bytes at an offset (`magic` under `mask`).
//! For a platform, kiln builds the first bytes of an ELF executable of that architecture
//! (class, byte order, machine) and asks which enabled entry would take it. The entry must
//! carry the `F` flag (fix binary): the kernel then opened the interpreter when it was
//! registered, so it runs inside any mount namespace; without it the kernel looks the
//! interpreter up by path inside the sandbox's rootfs, where it is not. Entries are global
//! to the kernel (a user namespace sees its parent's unless it mounts its own), so a
//! rootless build sees what the host registered.

use kiln_base::platform::Platform;
use std::path::{Path, PathBuf};

/// Where the kernel shows binfmt_misc entries.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// How RUN executes for a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Execution {
    /// The host's own architecture (or one it runs natively).
    Native,
    /// Through the binfmt_misc entry `handler`, whose interpreter is `interpreter`.
    Emulated {
        handler: String,
        interpreter: PathBuf,
    },
}

/// Why RUN cannot execute for a platform here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinfmtError {
    #[error("platform {platform}: kiln runs Linux binaries only")]
    NotLinux { platform: String },
    #[error("platform {platform}: kiln does not know the ELF machine of architecture {arch:?}")]
    UnknownArchitecture { platform: String, arch: String },
    #[error(
        "platform {platform}: RUN needs an emulator for its binaries, and none is registered \
         with the kernel ({reason}); install one, e.g. `apt-get install qemu-user-static \
         binfmt-support` on Debian, registered with the F flag"
    )]
    NoEmulator { platform: String, reason: String },
    #[error(
        "platform {platform}: the emulator {handler} is registered without the F flag, so the \
         kernel looks its interpreter {} up inside the build's root filesystem, where it is \
         not; register it with the F flag (Debian's qemu-user-static does)",
        interpreter.display()
    )]
    NotFixed {
        platform: String,
        handler: String,
        interpreter: PathBuf,
    },
}

/// ELF identification of an architecture: class (1 = 32-bit, 2 = 64-bit), byte order
/// (1 = little, 2 = big endian) and `e_machine`.
fn elf_identity(arch: &str) -> Option<(u8, u8, u16)> {
    Some(match arch {
        "amd64" => (2, 1, 0x3e),
        "386" => (1, 1, 0x03),
        "arm64" => (2, 1, 0xb7),
        "arm" => (1, 1, 0x28),
        "riscv64" => (2, 1, 0xf3),
        "ppc64le" => (2, 1, 0x15),
        "ppc64" => (2, 2, 0x15),
        "s390x" => (2, 2, 0x16),
        "mips64le" => (2, 1, 0x08),
        "mips64" => (2, 2, 0x08),
        "mipsle" => (1, 1, 0x08),
        "mips" => (1, 2, 0x08),
        "loong64" => (2, 1, 0x102),
        _ => return None,
    })
}

/// The first 20 bytes of an ELF executable (`ET_EXEC`) for `(class, data, machine)`.
fn elf_header((class, data, machine): (u8, u8, u16)) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = data;
    h[6] = 1;
    let (e_type, e_machine) = if data == 2 {
        (2u16.to_be_bytes(), machine.to_be_bytes())
    } else {
        (2u16.to_le_bytes(), machine.to_le_bytes())
    };
    h[16..18].copy_from_slice(&e_type);
    h[18..20].copy_from_slice(&e_machine);
    h
}

/// Whether the host runs `arch` without an emulator: its own, and 32-bit x86 on x86-64.
fn native(host: &Platform, arch: &str) -> bool {
    host.architecture == arch || (host.architecture == "amd64" && arch == "386")
}

/// How RUN executes for `target` on this machine.
pub fn execution(target: &Platform) -> Result<Execution, BinfmtError> {
    execution_in(Path::new(BINFMT_DIR), &Platform::host(), target)
}

/// [`execution`] against the binfmt_misc entries in `dir` and the host `host`.
pub fn execution_in(
    dir: &Path,
    host: &Platform,
    target: &Platform,
) -> Result<Execution, BinfmtError> {
    let platform = target.to_string();
    if target.os != "linux" {
        return Err(BinfmtError::NotLinux { platform });
    }
    if native(host, &target.architecture) {
        return Ok(Execution::Native);
    }
    let identity =
        elf_identity(&target.architecture).ok_or_else(|| BinfmtError::UnknownArchitecture {
            platform: platform.clone(),
            arch: target.architecture.clone(),
        })?;
    let header = elf_header(identity);
    let no_emulator = |reason: String| BinfmtError::NoEmulator {
        platform: platform.clone(),
        reason,
    };
    match std::fs::read_to_string(dir.join("status")) {
        Ok(s) if s.trim() == "enabled" => {}
        Ok(_) => return Err(no_emulator("binfmt_misc is disabled".into())),
        Err(_) => {
            return Err(no_emulator(format!(
                "binfmt_misc is not mounted at {}",
                dir.display()
            )));
        }
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| no_emulator(format!("reading {}: {e}", dir.display())))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "status" && n != "register")
        .collect();
    // Deterministic when two entries would match (the kernel takes the newest; nothing
    // shows which that is, and a well-set machine has one).
    names.sort();
    for name in names {
        let Ok(text) = std::fs::read_to_string(dir.join(&name)) else {
            continue;
        };
        let Some(entry) = Entry::parse(&text) else {
            continue;
        };
        if !entry.enabled || !entry.matches(&header) {
            continue;
        }
        if !entry.flags.contains('F') {
            return Err(BinfmtError::NotFixed {
                platform,
                handler: name,
                interpreter: entry.interpreter,
            });
        }
        return Ok(Execution::Emulated {
            handler: name,
            interpreter: entry.interpreter,
        });
    }
    Err(no_emulator(format!(
        "no enabled entry in {} takes {} executables",
        dir.display(),
        target.architecture
    )))
}

/// One binfmt_misc entry, as the kernel prints it.
#[derive(Debug, Default)]
struct Entry {
    enabled: bool,
    interpreter: PathBuf,
    flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Vec<u8>,
    /// `extension` entries match file names, not bytes.
    by_extension: bool,
}

impl Entry {
    fn parse(text: &str) -> Option<Entry> {
        let mut e = Entry::default();
        for line in text.lines() {
            let (key, value) = line.split_once([' ', ':']).unwrap_or((line, ""));
            let value = value.trim_start_matches(':').trim();
            match key {
                "enabled" => e.enabled = true,
                "interpreter" => e.interpreter = PathBuf::from(value),
                "flags" => e.flags = value.to_string(),
                "offset" => e.offset = value.parse().ok()?,
                "magic" => e.magic = hex(value)?,
                "mask" => e.mask = hex(value)?,
                "extension" => e.by_extension = true,
                _ => {}
            }
        }
        Some(e)
    }

    /// Whether the kernel would hand an executable starting with `header` to this entry.
    fn matches(&self, header: &[u8]) -> bool {
        if self.by_extension || self.magic.is_empty() {
            return false;
        }
        self.magic.iter().enumerate().all(|(i, m)| {
            let mask = self.mask.get(i).copied().unwrap_or(0xff);
            let byte = header.get(self.offset + i).copied().unwrap_or(0);
            byte & mask == m & mask
        })
    }
}

/// Bytes from hex digits (an entry's magic and mask are at most 128 bytes).
fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 256 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";
    const QEMU_S390X: &str = "enabled\ninterpreter /usr/bin/qemu-s390x-static\nflags: P\n\
        offset 0\nmagic 7f454c4602020100000000000000000000020016\n\
        mask ffffffffffffff00fffffffffffffffffffeffff\n";
    const PYTHON: &str =
        "enabled\ninterpreter /usr/bin/python3.11\nflags: \noffset 0\nmagic a70d0d0a\n";

    fn dir(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        std::fs::write(d.path().join("register"), "").unwrap();
        for (name, text) in entries {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn the_host_and_its_compatible_arch_run_natively() {
        let d = dir(&[]);
        let host = p("linux/amd64");
        let native = |t: &str| execution_in(d.path(), &host, &p(t));
        assert_eq!(native("linux/amd64"), Ok(Execution::Native));
        assert_eq!(native("linux/386"), Ok(Execution::Native));
    }

    #[test]
    fn a_registered_fixed_emulator_is_found_by_the_elf_header() {
        let d = dir(&[("qemu-aarch64", QEMU_AARCH64), ("python3.11", PYTHON)]);
        let found = execution_in(d.path(), &p("linux/amd64"), &p("linux/arm64")).unwrap();
        assert_eq!(
            found,
            Execution::Emulated {
                handler: "qemu-aarch64".into(),
                interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P".into()
            }
        );
    }

    #[test]
    fn missing_unfixed_disabled_and_unmounted_are_clear_errors() {
        let host = p("linux/amd64");
        let d = dir(&[("qemu-aarch64", QEMU_AARCH64)]);
        let err = execution_in(d.path(), &host, &p("linux/riscv64")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("platform linux/riscv64: RUN needs an emulator"),
            "{text}"
        );
        assert!(text.contains("qemu-user-static"), "{text}");

        let d = dir(&[("qemu-s390x", QEMU_S390X)]);
        let err = execution_in(d.path(), &host, &p("linux/s390x")).unwrap_err();
        assert!(matches!(err, BinfmtError::NotFixed { .. }), "{err}");

        let disabled = QEMU_AARCH64.replace("enabled\n", "disabled\n");
        let d = dir(&[("qemu-aarch64", &disabled)]);
        assert!(execution_in(d.path(), &host, &p("linux/arm64")).is_err());

        let empty = tempfile::tempdir().unwrap();
        let err = execution_in(empty.path(), &host, &p("linux/arm64")).unwrap_err();
        assert!(
            err.to_string().contains("binfmt_misc is not mounted"),
            "{err}"
        );

        let err = execution_in(d.path(), &host, &p("linux/sparc")).unwrap_err();
        assert!(
            matches!(err, BinfmtError::UnknownArchitecture { .. }),
            "{err}"
        );
        let err = execution_in(d.path(), &host, &p("windows/amd64")).unwrap_err();
        assert!(matches!(err, BinfmtError::NotLinux { .. }), "{err}");
    }

    #[test]
    fn big_endian_headers_put_the_machine_high_byte_first() {
        let h = elf_header(elf_identity("s390x").unwrap());
        assert_eq!(&h[16..20], &[0, 2, 0, 0x16]);
        let h = elf_header(elf_identity("arm64").unwrap());
        assert_eq!(&h[16..20], &[2, 0, 0xb7, 0]);
    }
}
