//! `--chmod`: octal (`0755`, at most `07777`) or symbolic (`u+x,g-w`, `a=r`, `go=u`, `+X`)
//! modes, applied to every copied file and directory (never to symlinks), as BuildKit does.
//!
//! One parser for both checks: lowering refuses a Dockerfile whose `--chmod` this does not
//! parse, and the executor parses a copy request's value with it again to apply it, so the
//! two can never accept different modes.

/// A parsed `--chmod` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModeSpec {
    /// Replaces the permission bits (including setuid, setgid, sticky).
    Octal(u32),
    /// `chmod(1)` clauses, applied in order to the source mode.
    Symbolic(Vec<Clause>),
}

/// One `who op perms` clause of a symbolic mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    /// Bit mask of the classes named (`u`=0o4700, `g`=0o2070, `o`=0o1007); all when empty.
    who: u32,
    ops: Vec<(char, Perms)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Perms {
    /// `r`, `w`, `x`, `X`, `s`, `t` letters.
    Letters(String),
    /// Copy another class's current bits (`g=u`).
    Copy(char),
}

/// Why a `--chmod` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModeError {
    #[error("invalid chmod parameter: '{0}'. it should be octal string and between 0 and 07777")]
    Octal(String),
    #[error("invalid chmod parameter: '{value}': {reason}")]
    Symbolic { value: String, reason: String },
}

impl ModeError {
    /// The text lowering reports at the instruction: BuildKit's for an octal value, the
    /// short one the parser has always given for a symbolic mode.
    pub(crate) fn lowering_message(&self) -> String {
        match self {
            ModeError::Octal(_) => self.to_string(),
            ModeError::Symbolic { value, .. } => format!("invalid mode: {value}"),
        }
    }
}

impl ModeSpec {
    /// Parses like BuildKit: digits are octal (≤ 07777), anything else is symbolic.
    pub fn parse(s: &str) -> Result<ModeSpec, ModeError> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return match u32::from_str_radix(s, 8) {
                Ok(v) if v <= 0o7777 => Ok(ModeSpec::Octal(v)),
                _ => Err(ModeError::Octal(s.to_string())),
            };
        }
        let bad = |reason: &str| ModeError::Symbolic {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let mut clauses = Vec::new();
        for part in s.split(',') {
            let chars: Vec<char> = part.chars().collect();
            let mut i = 0;
            let mut who = 0u32;
            while i < chars.len() && "ugoa".contains(chars[i]) {
                who |= match chars[i] {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    _ => 0o7777,
                };
                i += 1;
            }
            let mut ops = Vec::new();
            if i >= chars.len() {
                return Err(bad("missing operator (+, - or =)"));
            }
            while i < chars.len() {
                let op = chars[i];
                if !"+-=".contains(op) {
                    return Err(bad(&format!("unexpected character {op:?}")));
                }
                i += 1;
                if i < chars.len() && "ugo".contains(chars[i]) {
                    ops.push((op, Perms::Copy(chars[i])));
                    i += 1;
                    continue;
                }
                let mut letters = String::new();
                while i < chars.len() && "rwxXst".contains(chars[i]) {
                    letters.push(chars[i]);
                    i += 1;
                }
                ops.push((op, Perms::Letters(letters)));
            }
            clauses.push(Clause { who, ops });
        }
        Ok(ModeSpec::Symbolic(clauses))
    }

    /// The new permission bits for an entry whose current bits are `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            ModeSpec::Octal(v) => *v & 0o7777,
            ModeSpec::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for c in clauses {
                    let who = if c.who == 0 { 0o7777 } else { c.who };
                    for (op, perms) in &c.ops {
                        let bits = match perms {
                            Perms::Letters(l) => letter_bits(l, m, is_dir) & who,
                            Perms::Copy(from) => {
                                let three = match from {
                                    'u' => (m >> 6) & 7,
                                    'g' => (m >> 3) & 7,
                                    _ => m & 7,
                                };
                                (three << 6 | three << 3 | three) & who & 0o777
                            }
                        };
                        match op {
                            '+' => m |= bits,
                            '-' => m &= !bits,
                            _ => {
                                // `=` clears the named classes' rwx (and their s/t bits).
                                m &= !(who & 0o7777);
                                m |= bits;
                            }
                        }
                    }
                }
                m
            }
        }
    }
}

fn letter_bits(letters: &str, current: u32, is_dir: bool) -> u32 {
    let mut b = 0;
    for ch in letters.chars() {
        b |= match ch {
            'r' => 0o444,
            'w' => 0o222,
            'x' => 0o111,
            'X' if is_dir || current & 0o111 != 0 => 0o111,
            's' => 0o6000,
            't' => 0o1000,
            _ => 0,
        };
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str, m: u32, dir: bool) -> u32 {
        ModeSpec::parse(s).unwrap().apply(m, dir)
    }

    #[test]
    fn symbolic_modes_follow_chmod() {
        assert_eq!(sym("u+x", 0o644, false), 0o744);
        assert_eq!(sym("g-w", 0o664, false), 0o644);
        assert_eq!(sym("a=r", 0o755, false), 0o444);
        assert_eq!(sym("u+x,g-w", 0o664, false), 0o744);
        assert_eq!(sym("go=u", 0o740, false), 0o777);
        assert_eq!(sym("+X", 0o644, false), 0o644);
        assert_eq!(sym("+X", 0o644, true), 0o755);
        assert_eq!(sym("a+X", 0o744, false), 0o755);
        assert_eq!(sym("o=", 0o777, false), 0o770);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("+t", 0o777, true), 0o1777);
        assert_eq!(sym("u=rwx,g=rx,o=", 0o000, false), 0o750);
    }

    #[test]
    fn octal_and_errors() {
        assert_eq!(ModeSpec::parse("0755").unwrap().apply(0o600, false), 0o755);
        assert_eq!(ModeSpec::parse("4755").unwrap().apply(0o600, false), 0o4755);
        assert_eq!(
            ModeSpec::parse("17777").unwrap_err().to_string(),
            "invalid chmod parameter: '17777'. it should be octal string and between 0 and 07777"
        );
        assert_eq!(
            ModeSpec::parse("789").unwrap_err().to_string(),
            "invalid chmod parameter: '789'. it should be octal string and between 0 and 07777"
        );
        assert!(ModeSpec::parse("u+z").is_err());
        assert!(ModeSpec::parse("u").is_err());
    }

    #[test]
    fn lowering_keeps_its_messages() {
        let octal = ModeSpec::parse("8755").unwrap_err();
        assert_eq!(
            octal.lowering_message(),
            "invalid chmod parameter: '8755'. it should be octal string and between 0 and 07777"
        );
        let symbolic = ModeSpec::parse("u+z").unwrap_err();
        assert_eq!(symbolic.lowering_message(), "invalid mode: u+z");
    }
}
