//! The comma-separated `key=value` lists of command-line specs (mesh axes, model and cluster
//! overrides, planner knobs): one splitter that keeps each item's position in the list, so a
//! caller can point at the bad item (see [`crate::sharding`]'s mesh errors).

/// One comma-separated item of a list, trimmed, with its byte offset in the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    /// The item without surrounding whitespace (empty for `a=1,,b=2`'s middle item).
    pub text: &'a str,
    /// Byte offset of `text` in the list.
    pub at: usize,
}

impl<'a> Item<'a> {
    /// The trimmed key and value on either side of the first `=`; `None` without one.
    pub fn key_value(&self) -> Option<(&'a str, &'a str)> {
        self.text.split_once('=').map(|(key, value)| (key.trim(), value.trim()))
    }

    /// Byte offset in the list just after the item's first `=` (where its value starts, before
    /// any whitespace), or the item's own offset without one.
    pub fn value_at(&self) -> usize {
        self.at + self.text.find('=').map_or(0, |i| i + 1)
    }
}

/// Every comma-separated item of `list`, empty ones included (a caller that tolerates
/// `a=1,` filters them out), in order.
pub fn items(list: &str) -> Vec<Item<'_>> {
    let mut out = Vec::new();
    let mut offset = 0;
    for entry in list.split(',') {
        let lead = entry.len() - entry.trim_start().len();
        out.push(Item { text: entry.trim(), at: offset + lead });
        offset += entry.len() + 1;
    }
    out
}

/// The non-empty items of `list`: `a=1, b=2,` has two.
pub fn non_empty_items(list: &str) -> Vec<Item<'_>> {
    items(list).into_iter().filter(|item| !item.text.is_empty()).collect()
}

/// The 1-based column, in characters, of byte offset `at` of `text` (clamped to its end).
pub fn column(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.get(..at).map_or(at, |prefix| prefix.chars().count()) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_their_offsets_and_split_at_the_first_equals() {
        let list = " dp=2, tp = 4 ,,x=a=b";
        type Summary<'a> = (&'a str, usize, Option<(&'a str, &'a str)>, usize);
        let found: Vec<Summary> = items(list).iter().map(|i| (i.text, i.at, i.key_value(), i.value_at())).collect();
        assert_eq!(
            found,
            [
                ("dp=2", 1, Some(("dp", "2")), 4),
                ("tp = 4", 7, Some(("tp", "4")), 11),
                ("", 15, None, 15),
                ("x=a=b", 16, Some(("x", "a=b")), 18),
            ]
        );
        assert_eq!(&list[11..], " 4 ,,x=a=b");
        assert_eq!(non_empty_items(list).len(), 3);
        assert_eq!(items("").len(), 1);
        assert!(non_empty_items(" , ").is_empty());
    }

    #[test]
    fn columns_count_characters_from_one() {
        assert_eq!(column("dp=2,tp=x", 8), 9);
        assert_eq!(column("é=1,b", 4), 4);
        assert_eq!(column("ab", 10), 3);
    }
}
