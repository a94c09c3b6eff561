//! Fuzz target: any bytes through parse, dump, lower and DOT must not panic.
#![no_main]

use kiln_parser::{
    EmptyResolver, LowerOptions, dump, dump_ast, lower, parse, parse_syntax, to_dot,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    if let Ok(ast) = parse_syntax(&src) {
        let _ = dump_ast(&ast);
    }
    if let Ok(df) = parse(&src) {
        let _ = dump(&df);
        if let Ok(graph) = lower(&df, &LowerOptions::default(), &EmptyResolver) {
            let _ = to_dot(&graph);
        }
    }
});
