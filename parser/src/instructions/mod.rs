//! Syntax nodes → typed instructions (BuildKit `instructions.Parse`).
//!
//! Owns the flags each instruction accepts and their types (bool, string, repeatable
//! list), argument-count rules, HEALTHCHECK options, COPY/ADD heredoc sources, ONBUILD
//! trigger checks, stage names, and splitting the file into global ARGs and stages.
//! Values are still as written: expansion happens during lowering.
//!
//! Split by concept: [`types`] (what a typed Dockerfile holds), [`stages`] (the file into
//! global ARGs and stages), [`command`] (one node into one instruction) with [`copy`] and
//! [`healthcheck`], over the shared [`flags`] and [`args`] rules.

mod args;
mod command;
mod copy;
mod flags;
mod healthcheck;
mod stages;
mod types;

pub use command::parse_instruction;
pub use stages::{from_ast, parse};
pub use types::*;
