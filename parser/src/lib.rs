//! kiln's Dockerfile front end.
//!
//! Owns everything between Dockerfile text and the [`BuildGraph`] the solver walks:
//! directives, line joining and heredocs ([`syntax`]), typed instructions and flags
//! ([`instructions`]), word expansion with BuildKit's rules ([`expand`]), and lowering
//! the AST into a graph of stages and steps ([`lower`]: ARG/ENV scoping, stage
//! references, `--target` pruning). [`dump`] prints BuildKit's AST dump format and
//! [`to_dot`] draws a graph as Graphviz. [`frontend`] reads the `# syntax=` directive.
//! [`copy_rules`] are the COPY/ADD source rules and [`chmod`] the `--chmod` modes, which the
//! executor applies again to a copy request; [`git_ref`] recognises git references (ADD's
//! git sources, a git URL as the build context) as BuildKit does; `instruction_values`
//! checks the values of EXPOSE and STOPSIGNAL, and `history` writes the history texts.
//! [`lint`] holds BuildKit's build checks, which read the file and the lowering and find,
//! never change, anything.
//!
//! It knows nothing about files, processes or the store: callers hand it text and a
//! [`BaseResolver`] for facts about base images.

/// The largest Dockerfile kiln reads (and the largest `.dockerignore`): a build's input is
/// untrusted, and the biggest of 539 real Dockerfiles is under 200 KB.
pub const MAX_DOCKERFILE_SIZE: u64 = 16 << 20;

pub mod chmod;
pub mod copy_rules;
pub mod dot;
pub mod dump;
pub mod error;
pub mod expand;
pub mod frontend;
pub mod git_ref;
pub mod goformat;
pub mod graph;
mod history;
mod instruction_values;
pub mod instructions;
pub mod lint;
pub mod lower;
mod mount;
pub mod syntax;

pub use dot::to_dot;
pub use dump::{dump, dump_ast};
pub use error::ParseError;
pub use expand::{ExpandError, Lexer, expand, expand_words};
pub use git_ref::{GitRef, GitRefError, GitTransport, parse_git_ref};
pub use graph::*;
pub use instructions::{Dockerfile, parse};
pub use lower::{CheckOptions, LowerError, lower, lower_checked};
pub use syntax::{Ast, parse_syntax};
