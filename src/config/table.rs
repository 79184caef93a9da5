//! The config file as a tree of tables whose keys and values keep their byte spans
//! in the file, so that a table can be split — the keys the top level reads, the
//! rest for the source's or handler's own serde struct — and each part
//! deserialized on its own while errors still point at the right line.
//! (`#[serde(flatten)]` would lose the spans and break `deny_unknown_fields`.)
//!
//! A source kind or a handler is an [`Owner`] of keys: its name, its raw serde
//! struct's field names (read from the struct itself, see [`fields_of`]) and a
//! type check of one key against that struct.

use std::ops::Range;
use std::sync::OnceLock;

use serde::de::{DeserializeOwned, Visitor};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};

/// One `key = value` of a table, both spanned.
pub(crate) type Entry<'i> = (Spanned<DeString<'i>>, Spanned<DeValue<'i>>);

/// A table of the config file: its span and its entries, in the order the toml
/// crate keeps them (the order serde visits them in).
pub(crate) struct Table<'i> {
    pub span: Range<usize>,
    pub entries: Vec<Entry<'i>>,
}

impl<'i> Table<'i> {
    /// `value` as a table, or `value` itself when it is none.
    pub fn from_value(value: Spanned<DeValue<'i>>) -> Result<Table<'i>, Spanned<DeValue<'i>>> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Table(items) => Ok(Table {
                span,
                entries: items.into_iter().collect(),
            }),
            other => Err(Spanned::new(span, other)),
        }
    }

    pub fn from_document(root: Spanned<DeTable<'i>>) -> Table<'i> {
        let span = root.span();
        Table {
            span,
            entries: root.into_inner().into_iter().collect(),
        }
    }

    /// The value of `key` when it is a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .and_then(|(_, v)| v.get_ref().as_str())
    }

    /// The keys with the offset of their values, in order.
    pub fn keys(&self) -> impl Iterator<Item = (&str, usize)> {
        self.entries
            .iter()
            .map(|(k, v)| (k.get_ref().as_ref(), v.span().start))
    }

    /// The first of `all` (in that order) that is set here but not owned by
    /// `owner`, with the offset of its value: a key of another handler or kind.
    pub fn foreign_key(
        &self,
        all: &'static [&'static str],
        owner: &Owner,
    ) -> Option<(&'static str, usize)> {
        all.iter().find_map(|key| {
            let (_, at) = self.keys().find(|(k, _)| k == key)?;
            (!owner.owns(key)).then_some((*key, at))
        })
    }

    /// Moves the entries whose key satisfies `take` into a table of their own
    /// (same span).
    pub fn split_off(&mut self, take: impl Fn(&str) -> bool) -> Table<'i> {
        let (taken, kept) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|(k, _)| take(k.get_ref().as_ref()));
        self.entries = kept;
        Table {
            span: self.span.clone(),
            entries: taken,
        }
    }

    /// Deserializes the table into `T` (spans inside stay those of the file).
    pub fn deserialize<T: DeserializeOwned>(self) -> Result<T, toml::de::Error> {
        let mut items = DeTable::new();
        for (k, v) in self.entries {
            items.insert(k, v);
        }
        T::deserialize(ValueDeserializer::from(Spanned::new(
            self.span,
            DeValue::Table(items),
        )))
    }
}

/// Deserializes `value` as a `T` for its error only (a value of the wrong type
/// gets serde's message, e.g. "invalid type: integer `1`, expected a sequence").
pub(crate) fn type_error<T: DeserializeOwned>(value: Spanned<DeValue<'_>>) -> toml::de::Error {
    match T::deserialize(ValueDeserializer::from(value)) {
        Err(e) => e,
        Ok(_) => serde::de::Error::custom("unexpected value"),
    }
}

/// Type-checks the single entry `entry` against the struct `T` (whose fields are
/// all optional).
pub(crate) fn check_entry<T: DeserializeOwned>(
    span: Range<usize>,
    entry: Entry<'_>,
) -> Result<(), toml::de::Error> {
    Table {
        span,
        entries: vec![entry],
    }
    .deserialize::<T>()
    .map(drop)
}

/// Keys owned by a source kind or a handler: its name, its raw struct's fields and
/// a type check of one entry against that struct.
pub(crate) struct Owner {
    pub name: &'static str,
    pub keys: fn() -> &'static [&'static str],
    pub check: fn(Range<usize>, Entry<'_>) -> Result<(), toml::de::Error>,
}

impl Owner {
    /// The owner `name` of the fields of `R`.
    pub const fn of<R: DeserializeOwned>(name: &'static str) -> Owner {
        Owner {
            name,
            keys: fields_of::<R>,
            check: check_entry::<R>,
        }
    }

    pub fn owns(&self, key: &str) -> bool {
        (self.keys)().contains(&key)
    }
}

/// The fields of the serde struct `T`, as serde names them (renames applied),
/// read once from its `Deserialize` implementation.
pub(crate) fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

/// The keys of every owner, each once, in owner order, between `head` and `tail`
/// (the message of an unknown key lists them in this order).
pub(crate) fn all_keys(
    cell: &'static OnceLock<Vec<&'static str>>,
    head: &[&'static str],
    owners: &[&Owner],
    tail: &[&'static str],
) -> &'static [&'static str] {
    cell.get_or_init(|| {
        let mut keys: Vec<&'static str> = head.to_vec();
        for key in owners.iter().flat_map(|o| (o.keys)().iter()).chain(tail) {
            if !keys.contains(key) {
                keys.push(key);
            }
        }
        keys
    })
}

/// The owners' names, sorted and comma-separated (for messages).
pub(crate) fn names(cell: &'static OnceLock<String>, owners: &[&Owner]) -> &'static str {
    cell.get_or_init(|| {
        let mut names: Vec<&str> = owners.iter().map(|o| o.name).collect();
        names.sort_unstable();
        names.join(", ")
    })
}

/// serde's message for a key that no struct has, e.g. "unknown field `colour`,
/// expected one of `id`, `type`, …".
pub(crate) fn unknown_field(key: &str, known: &'static [&'static str]) -> String {
    let e: toml::de::Error = serde::de::Error::unknown_field(key, known);
    e.message().to_string()
}

/// A deserializer that only records the field list a struct asks for.
struct FieldProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        a: Option<u8>,
        #[serde(rename = "type")]
        b: Option<String>,
    }

    #[test]
    fn fields_are_read_from_the_struct() {
        assert_eq!(fields_of::<Probe>(), &["a", "type"]);
    }

    #[test]
    fn split_parts_keep_absolute_spans() {
        let text = "x = 1\n[t]\na = 2\ntype = 3\n";
        let mut root = Table::from_document(DeTable::parse(text).unwrap());
        let t = root.split_off(|k| k == "t").entries.pop().unwrap().1;
        let mut t = Table::from_value(t).ok().unwrap();
        let rest = t.split_off(|k| k == "type");
        let err = rest.deserialize::<Probe>().err().unwrap();
        assert_eq!(&text[err.span().unwrap()], "3");
        assert!(t.deserialize::<Probe>().is_ok());
    }
}
