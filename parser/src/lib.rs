//! kiln's Dockerfile front end.
//!
//! Owns everything between Dockerfile text and the [`BuildGraph`] the solver walks:
//! directives, line joining and heredocs, instruction parsing (nom) into an AST with
//! source spans, word expansion with BuildKit's rules, and lowering the AST into a graph of
//! stages and steps (ARG/ENV scoping, stage references, `--target` pruning).
//!
//! It knows nothing about files, processes or the store: callers hand it text and a
//! [`lower::BaseResolver`] for facts about base images.

pub mod graph;

pub use graph::*;
