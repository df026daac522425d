//! A serde `Deserializer` over the located tree: every value is deserialized straight from the
//! node it came from, so whatever a type's `Deserialize` refuses (a wrong type, an unknown key, a
//! missing key, an unknown variant, the rule of a value type) is reported at that node's
//! `file:line:col` with its key path.
//!
//! serde stops at the first error; to report all errors at once, [`collect`] deserializes again
//! after each error with the failing node left out (marked poisoned, as interpolation errors
//! already are), until the rest deserializes. A missing key whose value was left out is not
//! reported twice: its table is left out in turn.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use std::fmt;

use super::located::Error;
pub(crate) use super::located::{HINT, Seg, did_you_mean, invalid, path_text};
use super::tree::{Entry, Errors, Node, Value};

/// At most this many errors are collected (each costs one more pass over the tree).
const MAX_ERRORS: usize = 200;

/// The node at `path`.
pub(crate) fn node_at<'a>(root: &'a Node, path: &[Seg]) -> Option<&'a Node> {
    path.iter().try_fold(root, |node, seg| match seg {
        Seg::Key(k) => node.entry(k).map(|e| &e.node),
        Seg::Index(i) => node.as_array()?.get(*i),
    })
}

/// The value at `path` when it deserializes (nodes left out skipped), without reporting: for
/// checks that need one section when other errors keep the whole config from building.
pub(crate) fn value_at<T: DeserializeOwned>(root: &Node, path: &[Seg]) -> Option<T> {
    let node = node_at(root, path).filter(|n| !n.poisoned)?;
    T::deserialize(NodeDe::new(node, path.to_vec())).ok()
}

/// Deserializes `T` from the tree, pushing every error to `errors`. Returns the value built from
/// the nodes that had no error when it could still be built (an optional value left out takes its
/// default), for the cross-field checks.
pub(crate) fn collect<T: DeserializeOwned>(root: &mut Node, errors: &mut Errors<'_>) -> Option<T> {
    let mut reported = 0;
    loop {
        let e = match T::deserialize(NodeDe::new(root, Vec::new())) {
            Ok(v) => return Some(v),
            Err(e) => e.locate(root, &[]),
        };
        let found = e.found?;
        if !found.echo {
            errors.push(found.loc, &found.key, found.message, found.hint);
            reported += 1;
        }
        // The root cannot be left out; a node already left out means no progress.
        if found.poison.is_empty() || reported >= MAX_ERRORS || !poison(root, &found.poison) {
            return None;
        }
    }
}

fn poison(node: &mut Node, path: &[Seg]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return !std::mem::replace(&mut node.poisoned, true);
    };
    let child = match (first, &mut node.value) {
        (Seg::Key(k), Value::Table(entries)) => entries
            .iter_mut()
            .find(|e| &e.key == k)
            .map(|e| &mut e.node),
        (Seg::Index(i), Value::Array(items)) => items.get_mut(*i),
        _ => None,
    };
    child.is_some_and(|c| poison(c, rest))
}

/// Deserializes one node; `path` leads to it from the root.
struct NodeDe<'a> {
    node: &'a Node,
    path: Vec<Seg>,
}

impl<'a> NodeDe<'a> {
    fn new(node: &'a Node, path: Vec<Seg>) -> Self {
        NodeDe { node, path }
    }

    fn integer<T: TryFrom<i64> + fmt::Display>(&self, min: T, max: T) -> Result<T, Error> {
        match self.node.value {
            Value::Integer(n) => T::try_from(n).map_err(|_| {
                Error::custom(format_args!(
                    "{n} is out of range{HINT}use a number from {min} to {max}"
                ))
            }),
            _ => Err(Error::expected("an integer")),
        }
    }
}

use de::Error as _;

macro_rules! integers {
    ($($method:ident $visit:ident $ty:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.$visit(self.integer::<$ty>(<$ty>::MIN, <$ty>::MAX)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::String(s) | Value::Datetime(s) => v.visit_str(s),
            Value::Integer(i) => v.visit_i64(*i),
            Value::Float(f) => v.visit_f64(*f),
            Value::Boolean(b) => v.visit_bool(*b),
            Value::Array(items) => v.visit_seq(Seq {
                items: items.iter().enumerate(),
                path: self.path,
            }),
            Value::Table(entries) => v.visit_map(Map {
                entries: entries.iter(),
                current: None,
                path: self.path,
            }),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.node.value {
            Value::Boolean(b) => v.visit_bool(b),
            _ => Err(Error::expected("a boolean (true or false)")),
        }
    }

    integers!(
        deserialize_i8 visit_i8 i8, deserialize_i16 visit_i16 i16, deserialize_i32 visit_i32 i32,
        deserialize_i64 visit_i64 i64, deserialize_u8 visit_u8 u8, deserialize_u16 visit_u16 u16,
        deserialize_u32 visit_u32 u32
    );

    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(self.integer::<u64>(0, i64::MAX as u64)?)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_f64(v)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.node.value {
            Value::Float(f) => v.visit_f64(f),
            Value::Integer(i) => v.visit_f64(i as f64),
            _ => Err(Error::expected("a number")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        // TOML has no null: a value that is there is `Some`.
        v.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.node.value {
            Value::Array(_) => self.deserialize_any(v),
            _ => Err(Error::expected("an array")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.node.value {
            Value::Table(_) => self.deserialize_any(v),
            _ => Err(Error::expected("a table")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::String(s) => {
                v.visit_enum(IntoDeserializer::<Error>::into_deserializer(s.as_str()))
            }
            _ => Err(Error::expected("a string")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::String(s) => v.visit_str(s),
            _ => Err(Error::expected("a string")),
        }
    }

    // Value types written as strings (durations, sizes, ...): the visitor says what it expected.
    serde::forward_to_deserialize_any! {
        char str bytes byte_buf unit unit_struct identifier i128 u128
    }
}

struct Seq<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: Vec<Seg>,
}

impl<'de> de::SeqAccess<'de> for Seq<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((i, node)) = self.items.by_ref().find(|(_, n)| !n.poisoned) else {
            return Ok(None);
        };
        let mut path = self.path.clone();
        path.push(Seg::Index(i));
        match seed.deserialize(NodeDe::new(node, path.clone())) {
            Ok(v) => Ok(Some(v)),
            Err(e) => Err(e.locate(node, &path)),
        }
    }
}

struct Map<'a> {
    entries: std::slice::Iter<'a, Entry>,
    current: Option<&'a Entry>,
    path: Vec<Seg>,
}

impl Map<'_> {
    fn child(&self, entry: &Entry) -> Vec<Seg> {
        let mut path = self.path.clone();
        path.push(Seg::Key(entry.key.clone()));
        path
    }
}

impl<'de> de::MapAccess<'de> for Map<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(entry) = self.entries.by_ref().find(|e| !e.node.poisoned) else {
            return Ok(None);
        };
        self.current = Some(entry);
        let key = IntoDeserializer::<Error>::into_deserializer(entry.key.as_str());
        match seed.deserialize(key) {
            Ok(k) => Ok(Some(k)),
            Err(e) => Err(e.locate_key(entry, &self.child(entry))),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let entry = self
            .current
            .take()
            .ok_or_else(|| Error::custom("a value was asked for before its key"))?;
        let path = self.child(entry);
        seed.deserialize(NodeDe::new(&entry.node, path.clone()))
            .map_err(|e| e.locate(&entry.node, &path))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::super::tree::{Source, parse};
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: u16,
        #[serde(default)]
        b: String,
        #[serde(default)]
        c: Vec<u16>,
        #[serde(default)]
        d: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        x: bool,
        #[serde(default)]
        y: f64,
    }

    /// line:col, key, message, hint.
    type Row = (String, String, String, Option<String>);

    /// Every error, and the value when it still built.
    fn run(text: &str) -> (Vec<Row>, Option<T>) {
        let sources = [Source {
            display: "f.toml".into(),
            text: text.into(),
        }];
        let mut root = parse(&sources, 0).unwrap();
        let mut errors = Errors::new(&sources);
        let value = collect::<T>(&mut root, &mut errors);
        let mut list: Vec<_> = errors
            .list
            .into_iter()
            .map(|e| ((e.line, e.col), e.key, e.message, e.hint))
            .collect();
        list.sort();
        let list = list
            .into_iter()
            .map(|((line, col), key, message, hint)| (format!("{line}:{col}"), key, message, hint))
            .collect();
        (list, value)
    }

    fn at(pos: &str, key: &str, message: &str, hint: Option<&str>) -> Row {
        (pos.into(), key.into(), message.into(), hint.map(Into::into))
    }

    #[test]
    fn every_error_of_every_level_at_once() {
        let (errors, value) =
            run("a = \"80\"\nb = 1\nc = [1, \"two\", 70000]\nz = 1\n[d]\nx = 1\ny = true\nw = 2\n");
        let int = "expected an integer, found a string";
        assert_eq!(
            errors,
            [
                at("1:5", "a", int, Some("remove the quotes: `80`")),
                at("2:5", "b", "expected a string, found an integer", None),
                at("3:9", "c[1]", int, None),
                at(
                    "3:16",
                    "c[2]",
                    "70000 is out of range",
                    Some("use a number from 0 to 65535")
                ),
                at(
                    "4:1",
                    "z",
                    "unknown key `z`",
                    Some("valid keys here: a, b, c, d")
                ),
                at(
                    "6:5",
                    "d.x",
                    "expected a boolean (true or false), found an integer",
                    None
                ),
                at("7:5", "d.y", "expected a number, found a boolean", None),
                at(
                    "8:1",
                    "d.w",
                    "unknown key `w`",
                    Some("valid keys here: x, y")
                ),
            ]
        );
        // `a` and `d.x` had errors: no second error says they are missing.
        assert!(value.is_none());
    }

    #[test]
    fn missing_keys_point_at_their_table_and_optional_values_fall_back() {
        let (errors, value) = run("a = 8080\nc = [1, -1]\n[d]\ny = 0.5\n");
        assert_eq!(
            errors,
            [
                at(
                    "2:9",
                    "c[1]",
                    "-1 is out of range",
                    Some("use a number from 0 to 65535")
                ),
                at("3:1", "d.x", "missing required key `x`", None),
            ]
        );
        // What had no error still builds, for the cross-field checks.
        let value = value.expect("a value without the bad parts");
        assert_eq!((value.a, value.c.as_slice()), (8080, &[1][..]));
        assert!(value.d.is_none());

        let (errors, value) = run("b = \"x\"\n");
        assert_eq!(errors, [at("0:0", "a", "missing required key `a`", None)]);
        assert!(value.is_none());
    }

    #[test]
    fn collecting_stops_at_the_cap() {
        let text: String = (0..MAX_ERRORS + 50)
            .map(|i| format!("k{i} = 1\n"))
            .collect();
        let (errors, value) = run(&format!("a = 1\n{text}"));
        assert_eq!(errors.len(), MAX_ERRORS);
        assert!(value.is_none());
    }

    #[test]
    fn paths_quote_keys_that_need_it() {
        let path = [
            Seg::Key("app".into()),
            Seg::Key("env".into()),
            Seg::Key("A.B".into()),
        ];
        assert_eq!(path_text(&path), "app.env.\"A.B\"");
        let path = [
            Seg::Key("notify".into()),
            Seg::Index(2),
            Seg::Key("url".into()),
        ];
        assert_eq!(path_text(&path), "notify[2].url");
    }
}
