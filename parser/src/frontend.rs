//! The `# syntax=` directive: which Dockerfile frontend a file asks for.
//!
//! BuildKit pulls that image and lets it turn the file into a build graph. kiln has one
//! frontend, its own parser, which implements `docker/dockerfile:1`, the stable and the
//! labs channel. So the references of that image (`docker/dockerfile:1`, `:1.7`,
//! `:1.7.1`, `:1-labs`, `:1.7-labs`, with or without `docker.io/` and a pinning digest)
//! need nothing. Any other frontend cannot be run; a file that parses anyway is built with
//! the built-in frontend and a warning naming the line, and a file that does not is
//! refused with a note saying which frontend it asked for.

use crate::syntax::Ast;

/// What a `# syntax=` directive asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxDirective {
    /// The reference as written.
    pub reference: String,
    /// 1-based line of the directive.
    pub line: usize,
    /// Whether kiln's own frontend is that frontend.
    pub built_in: bool,
}

impl SyntaxDirective {
    /// The warning for a frontend kiln cannot run, `None` for its own.
    pub fn warning(&self, file: &str) -> Option<String> {
        (!self.built_in).then(|| {
            format!(
                "{file}:{line}: `# syntax={reference}` asks for another Dockerfile frontend; \
                 kiln runs only its built-in one (docker/dockerfile:1) and builds with that",
                line = self.line,
                reference = self.reference
            )
        })
    }
}

/// The file's `# syntax=` directive, if it has one.
pub fn syntax_directive(ast: &Ast) -> Option<SyntaxDirective> {
    let d = ast.directives.iter().find(|d| d.name == "syntax")?;
    let reference = d.value.trim().to_string();
    Some(SyntaxDirective {
        built_in: is_built_in(&reference),
        reference,
        line: d.line,
    })
}

/// Whether `reference` names the `docker/dockerfile` image at major version 1.
pub fn is_built_in(reference: &str) -> bool {
    // A pinning digest does not change which frontend it is.
    let name_tag = reference.split_once('@').map_or(reference, |(n, _)| n);
    let repo_tag = name_tag
        .strip_prefix("docker.io/")
        .or_else(|| name_tag.strip_prefix("index.docker.io/"))
        .unwrap_or(name_tag);
    let Some(tag) = repo_tag.strip_prefix("docker/dockerfile:") else {
        // `docker/dockerfile` alone is `:latest`, today a 1.x release.
        return repo_tag == "docker/dockerfile";
    };
    let version = tag.strip_suffix("-labs").unwrap_or(tag);
    let mut parts = version.split('.');
    parts.next() == Some("1")
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && version.split('.').count() <= 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dockerfile_1_references_are_the_built_in_frontend() {
        for r in [
            "docker/dockerfile:1",
            "docker/dockerfile:1.7",
            "docker/dockerfile:1.7.1",
            "docker/dockerfile:1-labs",
            "docker/dockerfile:1.7-labs",
            "docker.io/docker/dockerfile:1",
            "docker/dockerfile",
            "docker/dockerfile:1@sha256:ac85f380a63b13dfcefa89046420e1781752bab202122f8f50032edf31be0021",
        ] {
            assert!(is_built_in(r), "{r}");
        }
        for r in [
            "docker/dockerfile:2",
            "docker/dockerfile:0.9",
            "docker/dockerfile:1.x",
            "docker/dockerfile:1..2",
            "docker/dockerfile:1.2.3.4",
            "example.com/user/frontend:1",
            "tonistiigi/dockerfile:runmount",
            "",
        ] {
            assert!(!is_built_in(r), "{r}");
        }
    }

    #[test]
    fn the_directive_is_found_with_its_line() {
        let ast = crate::syntax::parse_syntax(
            "# syntax=example.com/my/frontend:3\n# escape=`\nFROM scratch\n",
        )
        .unwrap();
        let d = syntax_directive(&ast).unwrap();
        assert_eq!(d.line, 1);
        assert!(!d.built_in);
        assert_eq!(
            d.warning("Dockerfile").unwrap(),
            "Dockerfile:1: `# syntax=example.com/my/frontend:3` asks for another Dockerfile \
             frontend; kiln runs only its built-in one (docker/dockerfile:1) and builds with that"
        );
        let ast =
            crate::syntax::parse_syntax("# syntax=docker/dockerfile:1\nFROM scratch\n").unwrap();
        assert_eq!(syntax_directive(&ast).unwrap().warning("Dockerfile"), None);
        let ast = crate::syntax::parse_syntax("FROM scratch\n").unwrap();
        assert_eq!(syntax_directive(&ast), None);
    }
}
