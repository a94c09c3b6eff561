//! The bounds of one expansion: how deep `${...}` may nest, how long a result may grow,
//! and how much of an offending word an error quotes. They keep a hostile Dockerfile from
//! overflowing the stack or the memory while it is expanded.

/// Deepest nesting of `${...}` inside one word. BuildKit has no limit and recurses once per
/// level, so 50,000 nested `${X:-${X:-...}}` overflow its stack as they did ours. Real
/// Dockerfiles nest two or three levels; 100 is far beyond any of them and costs a few
/// hundred KiB of stack at most, even unoptimized.
pub const MAX_NESTING: usize = 100;

/// Largest result of expanding one word (bytes). Linux refuses a single argument or
/// environment string over 128 KiB (MAX_ARG_STRLEN) and all of a process's arguments and
/// environment over ~2 MiB, so no RUN could use more; 1 MiB leaves room for labels and
/// paths while doubling ARGs (`A1=${A0}${A0}`...) stop at 1 MiB instead of gigabytes.
pub const MAX_EXPANDED_BYTES: usize = 1 << 20;

/// How much of the word an error shows: a word that hit a limit can be huge, and the
/// message needs only enough to find it (the line is named by the caller).
const ERROR_WORD_CHARS: usize = 200;

/// `word` cut to [`ERROR_WORD_CHARS`] characters (with `...`) for an error message.
pub(super) fn clip(word: &str) -> String {
    match word.char_indices().nth(ERROR_WORD_CHARS) {
        Some((end, _)) => format!("{}...", &word[..end]),
        None => word.to_string(),
    }
}

/// The error for a result over [`MAX_EXPANDED_BYTES`].
pub(super) fn too_long() -> String {
    format!("expansion exceeds {MAX_EXPANDED_BYTES} bytes")
}

/// Fails once `s` is over [`MAX_EXPANDED_BYTES`]: checked as results grow, so a word never
/// builds more than one step past the limit.
pub(super) fn check_len(s: &str) -> Result<(), String> {
    if s.len() > MAX_EXPANDED_BYTES {
        return Err(too_long());
    }
    Ok(())
}
