//! [`Notice`]: what a build or an export did that its caller may want to say, and the
//! line that says it. The facade prints nothing itself; every front end shows the same
//! words for the same event.

use crate::BuildError;
use crate::cache_io::CacheSpec;
use crate::exporter::OutputSpec;
use kiln_base::size::human_size;

/// What a build or an export did that its caller may want to say.
#[derive(Debug)]
pub enum Notice {
    /// Leftovers of killed kiln processes were removed from the store first.
    Reclaimed(kiln_store::Reclaimed),
    /// Removing those leftovers failed: it costs disk, not this build.
    ReclaimFailed(kiln_store::StoreError),
    CacheImported {
        spec: CacheSpec,
        records: usize,
    },
    /// A cache that cannot be read costs time, not correctness: the build goes on.
    CacheImportFailed(BuildError),
    OutputWritten(OutputSpec),
    CacheExported {
        spec: CacheSpec,
        exported: crate::cache_io::Exported,
    },
    /// An optional cache (REAPI) could not be written: the build stands.
    CacheExportFailed(BuildError),
    /// The `--remote` farm cannot be reached: every step runs here.
    RemoteDown(BuildError),
    Pushed {
        reference: String,
        digest: String,
    },
    /// Something in the Dockerfile the build goes on with, named by file and line.
    Dockerfile(String),
    /// A build check's finding in the Dockerfile named `file`.
    Check {
        file: String,
        finding: kiln_parser::lint::Finding,
    },
}

impl Notice {
    /// The line to show for this notice, or `None` when there is nothing to say (a
    /// registry output: its pushes have their own notices).
    pub fn message(&self) -> Option<String> {
        Some(match self {
            Notice::Reclaimed(r) => format!(
                "removed {} leftovers of interrupted kiln processes ({})",
                r.entries,
                human_size(r.bytes)
            ),
            Notice::ReclaimFailed(e) => {
                format!("warning: removing leftovers of interrupted builds: {e}")
            }
            Notice::CacheImported { spec, records } => {
                format!("imported {records} cache records from {spec:?}")
            }
            Notice::CacheImportFailed(e) => format!("warning: {}", chain(e)),
            Notice::OutputWritten(OutputSpec::Oci { dest, tar: false }) => {
                format!("exported an OCI layout directory to {}", dest.display())
            }
            Notice::OutputWritten(OutputSpec::Oci { dest, tar: true }) => format!(
                "exported an OCI archive (tar) to {}; add tar=false for an OCI layout directory",
                dest.display()
            ),
            Notice::OutputWritten(OutputSpec::Docker { dest }) => format!(
                "exported a docker archive (for docker load) to {}",
                dest.display()
            ),
            Notice::OutputWritten(OutputSpec::Registry) => return None,
            Notice::CacheExported { spec, exported } => match exported.uploaded {
                None => format!("exported {} cache records to {spec:?}", exported.records),
                Some((blobs, bytes)) => format!(
                    "exported {} cache records to the {spec}: uploaded {blobs} blobs the server lacked ({})",
                    exported.records,
                    human_size(bytes)
                ),
            },
            Notice::CacheExportFailed(e) => format!("warning: {}; the image is built", chain(e)),
            Notice::RemoteDown(e) => format!("warning: {}; running every step here", chain(e)),
            Notice::Pushed { reference, digest } => format!("pushed {reference}: digest {digest}"),
            Notice::Dockerfile(warning) => format!("warning: {warning}"),
            Notice::Check { file, finding } => format!(
                "warning: {file}:{}: {}: {}",
                finding.line, finding.rule, finding.message
            ),
        })
    }

    /// The notice as a `--progress json` event of its own, for a notice that is data: a
    /// build check's finding is a `warning` event (rule, file, line, message). `None` for
    /// the rest, which every mode shows as their [`Notice::message`] line.
    pub fn json_event(&self) -> Option<serde_json::Value> {
        match self {
            Notice::Check { file, finding } => Some(serde_json::json!({
                "event": "warning",
                "rule": finding.rule.name(),
                "description": finding.rule.description(),
                "file": file,
                "line": finding.line,
                "message": finding.message,
            })),
            _ => None,
        }
    }
}

/// `e` and its causes, joined by `: ` (as `{:#}` of an `anyhow::Error` reads).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_parser::lint::{Finding, Rule};

    #[test]
    fn a_check_finding_is_a_warning_event() {
        let notice = Notice::Check {
            file: "Dockerfile".to_string(),
            finding: Finding::new(
                Rule::FromAsCasing,
                3,
                "'as' and 'FROM' keywords' casing do not match",
            ),
        };
        let event = notice.json_event().expect("a finding is an event");
        assert_eq!(
            event,
            serde_json::json!({
                "event": "warning",
                "rule": "FromAsCasing",
                "description": "The 'as' keyword should match the case of the 'from' keyword",
                "file": "Dockerfile",
                "line": 3,
                "message": "'as' and 'FROM' keywords' casing do not match",
            })
        );
        assert_eq!(
            notice.message().as_deref(),
            Some(
                "warning: Dockerfile:3: FromAsCasing: 'as' and 'FROM' keywords' casing do not match"
            )
        );
        let words = Notice::Dockerfile("Dockerfile:1: something".to_string());
        assert!(words.json_event().is_none());
    }
}
