//! Positions inside a logical line (continuations joined): byte offsets mapped back to
//! the physical line and the column in characters, as BuildKit reports them in errors.

use crate::graph::Span;

/// Maps byte offsets of a logical line back to physical lines and columns.
#[derive(Debug, Clone, Default)]
pub(super) struct SegmentMap {
    /// (offset in the logical line, physical line, byte column in that physical line)
    pub(super) segments: Vec<(usize, usize, usize)>,
}

/// What is needed to give positions inside one logical line.
pub(crate) struct LineCtx<'a> {
    pub(super) logical: &'a str,
    pub(super) map: &'a SegmentMap,
    pub(super) lines: &'a [&'a str],
    pub(super) end_line: usize,
    /// The last column computed: (line, byte column, char count). Spans are asked for left
    /// to right (each flag of an instruction), so counting on from the last one keeps a
    /// line of many flags linear instead of quadratic (a hostile line of 600,000 flags
    /// took minutes).
    pub(super) last: std::cell::Cell<(usize, usize, usize)>,
}

impl LineCtx<'_> {
    fn locate(&self, offset: usize) -> (usize, usize) {
        let segs = &self.map.segments;
        let i = segs.partition_point(|s| s.0 <= offset);
        let (start, line, col0) = segs[i.saturating_sub(1)];
        let byte_col = col0 + (offset - start);
        let text = self.lines.get(line - 1).copied().unwrap_or("");
        let end = byte_col.min(text.len());
        let (l0, b0, c0) = self.last.get();
        let counted = match text.get(b0..end) {
            Some(delta) if l0 == line && b0 <= end => Some(c0 + delta.chars().count()),
            _ => text.get(..end).map(|p| p.chars().count()),
        };
        if let Some(chars) = counted {
            self.last.set((line, end, chars));
        }
        (line, counted.unwrap_or(byte_col) + 1)
    }

    pub(super) fn column_at(&self, offset: usize) -> usize {
        self.locate(offset).1
    }

    /// Span of a substring of the logical line.
    pub(super) fn span_of(&self, sub: &str) -> Span {
        let offset = (sub.as_ptr() as usize).saturating_sub(self.logical.as_ptr() as usize);
        let offset = offset.min(self.logical.len());
        let (line, column) = self.locate(offset);
        Span {
            line,
            column,
            end_line: self.end_line,
        }
    }
}
