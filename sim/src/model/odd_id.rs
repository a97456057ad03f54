//! Odd spellings of resource ids in `alternativeNames`.

/// Ways an `alternativeNames` resource id can be malformed while still naming, read loosely, a resource
/// that exists. Microsoft documents no such ids; they are what a client must survive: a parser that
/// normalises `.`/`..`/`//` or decodes escapes lands on *some* resource (or on a collection), and one
/// that percent-encodes `?`/`#` asks ARM for a name that does not exist. The right verdict for all of
/// them is unknown / `unrecognized_alternative_names` (README, "Verdicts").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OddId {
    /// `/subscriptions/s/resourcegroups/rg/./providers/...`
    DotSegment,
    /// `.../{type}/{name}/extensions/..`: a client that drops the `..` (the `url` crate's
    /// `PathSegmentsMut` does) asks for the `extensions` collection of the resource.
    DotDotAfterName,
    /// `.../{type}/elsewhere/../{name}`: resolved by a normalising client to the resource itself.
    DotDotBeforeName,
    /// `.../{type}//{name}`
    EmptySegment,
    /// `.../{type}/{name}/`
    TrailingSlash,
    /// `.../{type}%2F{name}`
    EncodedSlash,
    /// `.../providers%2f{namespace}/...` (lower-case escape)
    EncodedSlashLower,
    /// `.../resourcegroups/{rg}%5Cproviders/...` (an escaped backslash)
    EncodedBackslash,
    /// `{id}?api-version=2024-07-01`
    QueryMark,
    /// `{id}#identity`
    Fragment,
    /// `{id} ` (a trailing space)
    TrailingSpace,
    /// `{id}\t\n` (trailing tab and newline)
    TrailingNewline,
}

impl OddId {
    pub const ALL: [OddId; 12] = [
        OddId::DotSegment,
        OddId::DotDotAfterName,
        OddId::DotDotBeforeName,
        OddId::EmptySegment,
        OddId::TrailingSlash,
        OddId::EncodedSlash,
        OddId::EncodedSlashLower,
        OddId::EncodedBackslash,
        OddId::QueryMark,
        OddId::Fragment,
        OddId::TrailingSpace,
        OddId::TrailingNewline,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::DotSegment => "dot_segment",
            Self::DotDotAfterName => "dotdot_after_name",
            Self::DotDotBeforeName => "dotdot_before_name",
            Self::EmptySegment => "empty_segment",
            Self::TrailingSlash => "trailing_slash",
            Self::EncodedSlash => "encoded_slash",
            Self::EncodedSlashLower => "encoded_slash_lower",
            Self::EncodedBackslash => "encoded_backslash",
            Self::QueryMark => "query_mark",
            Self::Fragment => "fragment",
            Self::TrailingSpace => "trailing_space",
            Self::TrailingNewline => "trailing_newline",
        }
    }

    /// The odd spelling of a well-formed resource id
    /// (`/subscriptions/{s}/resource[gG]roups/{rg}/providers/{ns}/{type}/{name}`).
    pub fn apply(self, id: &str) -> String {
        let (head, name) = id.rsplit_once('/').unwrap_or(("", id));
        let providers_at = id.to_ascii_lowercase().find("/providers/").unwrap_or(0);
        let (scope, provider_part) = id.split_at(providers_at);
        match self {
            Self::DotSegment => format!("{scope}/.{provider_part}"),
            Self::DotDotAfterName => format!("{id}/extensions/.."),
            Self::DotDotBeforeName => format!("{head}/elsewhere/../{name}"),
            Self::EmptySegment => format!("{head}//{name}"),
            Self::TrailingSlash => format!("{id}/"),
            Self::EncodedSlash => format!("{head}%2F{name}"),
            Self::EncodedSlashLower => {
                format!(
                    "{scope}/providers%2f{}",
                    &provider_part["/providers/".len()..]
                )
            }
            Self::EncodedBackslash => format!("{scope}%5C{}", &provider_part[1..]),
            Self::QueryMark => format!("{id}?api-version=2024-07-01"),
            Self::Fragment => format!("{id}#identity"),
            Self::TrailingSpace => format!("{id} "),
            Self::TrailingNewline => format!("{id}\t\n"),
        }
    }
}
