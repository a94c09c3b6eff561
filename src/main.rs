//! The `kiln` command line: parses flags and calls the crates.

fn main() {
    println!("kiln");
}
