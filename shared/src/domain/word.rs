//! Word enums: the closed vocabularies Ferry spells as words in the API, the
//! schema and the queue (`sql_query`, `owner`, `cancelling`), declared with
//! [`word_enum!`].

/// Declares a word enum. Each word is written once, as its variant's name:
/// strum spells it in the case given after `in` (`"snake_case"`,
/// `"lowercase"`), and serde reads and writes the same words.
///
/// The enum derives `Debug, Clone, Copy, PartialEq, Eq, Hash`, serde's
/// `Serialize, Deserialize` and strum's `Display, EnumString,
/// IntoStaticStr, VariantArray`, and gets `as_str` (its word) and `parse`
/// (exact, case-sensitive; `None` for any other text). Attributes written
/// on the enum, further derives included, are kept:
///
/// ```ignore
/// word_enum! {
///     /// A user's relation to one resource.
///     #[derive(PartialOrd, Ord)]
///     pub enum Role in "lowercase" {
///         Viewer,
///         Editor,
///         Owner,
///     }
/// }
/// ```
macro_rules! word_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident in $case:literal {
            $($(#[$variant_meta:meta])* $variant:ident),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            ::serde::Serialize,
            ::serde::Deserialize,
            ::strum::Display,
            ::strum::EnumString,
            ::strum::IntoStaticStr,
            ::strum::VariantArray,
        )]
        #[serde(rename_all = $case)]
        #[strum(serialize_all = $case)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        impl $name {
            /// The word of this variant.
            pub fn as_str(self) -> &'static str {
                self.into()
            }

            /// The variant whose word is `text` (exact, case-sensitive).
            pub fn parse(text: &str) -> Option<Self> {
                text.parse().ok()
            }
        }
    };
}
pub(crate) use word_enum;

#[cfg(test)]
mod tests {
    use strum::VariantArray;

    word_enum! {
        /// A vocabulary of two-word variants, to see the case applied.
        enum Sample in "snake_case" {
            /// A documented variant.
            FirstWord,
            SecondWord,
        }
    }

    #[test]
    fn a_word_enum_spells_reads_and_serializes_the_same_words() {
        assert_eq!(Sample::VARIANTS, [Sample::FirstWord, Sample::SecondWord]);
        assert_eq!(Sample::SecondWord.as_str(), "second_word");
        assert_eq!(Sample::SecondWord.to_string(), "second_word");
        assert_eq!(Sample::parse("first_word"), Some(Sample::FirstWord));
        assert_eq!(Sample::parse("FirstWord"), None);
        assert_eq!(Sample::parse("first word"), None);
        assert_eq!(
            serde_json::to_value(Sample::FirstWord).expect("encode"),
            serde_json::json!("first_word")
        );
        assert_eq!(
            serde_json::from_value::<Sample>(serde_json::json!("second_word")).expect("decode"),
            Sample::SecondWord
        );
        assert!(serde_json::from_value::<Sample>(serde_json::json!("SecondWord")).is_err());
    }
}
