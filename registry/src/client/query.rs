//! Query strings on request URLs: values percent-encoded (everything but RFC 3986's
//! unreserved characters, as Go's `url.QueryEscape` less its `+` for a space).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What a query value keeps unescaped: letters, digits and `-_.~`.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// Appends `key=value` (value percent-encoded) to a URL that may already have a query.
pub(crate) fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={}", percent_encode(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded_and_appended() {
        assert_eq!(
            with_query("/v2/a/blobs/uploads/x?_state=abc", "digest", "sha256:00"),
            "/v2/a/blobs/uploads/x?_state=abc&digest=sha256%3A00"
        );
        assert_eq!(
            percent_encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(percent_encode("a b~é"), "a%20b~%C3%A9");
    }
}
