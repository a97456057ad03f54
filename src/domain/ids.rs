//! The ids of tenants, directory objects and subscriptions. Entra and ARM compare them
//! case-insensitively (GUIDs; a tenant may also be named by a domain), so they have one case rule,
//! applied once, where an id enters: trimmed and ASCII lower-case. Whatever reads them after that (keys,
//! joins, database binds, outputs) gets that form and never lower-cases again.
//!
//! No validation beyond that: what a well-formed id looks like is checked where input is checked (the
//! configuration, the API's parameters), and anything Graph, ARM or Resource Graph names is taken as it
//! names it.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// An id type that holds its text trimmed and ASCII lower-cased, whatever it was made from (`&str`,
/// `String`, a parsed or deserialised string). Serialised as that text; ordered, hashed and compared as
/// it, so `Borrow<str>` finds it in maps by the normalised text.
macro_rules! normalised_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id of `text`, trimmed and ASCII lower-cased.
            pub fn new(text: &str) -> Self {
                Self(text.trim().to_ascii_lowercase())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self::new(text)
            }
        }

        impl From<String> for $name {
            fn from(mut text: String) -> Self {
                if text.trim().len() != text.len() {
                    return Self::new(&text);
                }
                text.make_ascii_lowercase();
                Self(text)
            }
        }

        impl From<&String> for $name {
            fn from(text: &String) -> Self {
                Self::new(text)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Ok(Self::new(text))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(Self::from)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        /// Equal to the normalised text only: compare with an id made from the other text to ignore case.
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

normalised_id! {
    /// An Entra tenant: its GUID, or a domain name (`contoso.onmicrosoft.com`) where configuration names
    /// it so.
    TenantId
}

normalised_id! {
    /// A directory object: a managed identity's service principal (Graph `id`), which is also the
    /// `principalId` its resource carries.
    ObjectId
}

normalised_id! {
    /// An Azure subscription (its GUID).
    SubscriptionId
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn every_way_in_gives_the_same_lower_case_id() {
        let raw = "  8097AB0C-1234-ABCD-9F00-00000000000A\n";
        let want = "8097ab0c-1234-abcd-9f00-00000000000a";
        assert_eq!(ObjectId::new(raw).as_str(), want);
        assert_eq!(ObjectId::from(raw).as_str(), want);
        assert_eq!(ObjectId::from(raw.to_owned()).as_str(), want);
        assert_eq!(ObjectId::from(want.to_uppercase()).as_str(), want);
        assert_eq!(raw.parse::<ObjectId>().expect("infallible").as_str(), want);
        let de: ObjectId = serde_json::from_str(&format!("{raw:?}")).expect("deserialises");
        assert_eq!(de, want);
        assert_eq!(ObjectId::new(raw).to_string(), want);
    }

    #[test]
    fn serialised_as_the_lower_case_text() {
        let t = TenantId::new("Contoso.OnMicrosoft.com");
        assert_eq!(
            serde_json::to_string(&t).expect("serialises"),
            r#""contoso.onmicrosoft.com""#
        );
        let s: Vec<SubscriptionId> = serde_json::from_str(r#"["A","b "]"#).expect("deserialises");
        assert_eq!(s, [SubscriptionId::new("a"), SubscriptionId::new("B")]);
    }

    #[test]
    fn maps_keyed_by_an_id_are_read_with_its_text() {
        let mut m = HashMap::new();
        m.insert(SubscriptionId::new("ABC"), 1);
        assert_eq!(m.get("abc"), Some(&1));
        assert_eq!(m.get(SubscriptionId::new("aBc").as_str()), Some(&1));
        assert_eq!(
            m.get("ABC"),
            None,
            "the text of a map lookup is not normalised"
        );
    }
}
