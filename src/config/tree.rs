//! A TOML tree whose every key and value remembers the file and byte offset it came from, so
//! that errors found after merging still point into the right file.

use crate::error::ConfigError;

/// One file that contributed to the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The path as shown to the user.
    pub display: String,
    pub text: String,
}

/// Where something is: a file (index into the sources) and a byte offset, or the whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub file: usize,
    pub offset: Option<usize>,
}

impl Loc {
    pub fn file_level(file: usize) -> Self {
        Loc { file, offset: None }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Value,
    /// Where the value starts (for tables: their header, inline table or dotted key).
    pub loc: Loc,
    /// An error was already reported for this value; later checks skip it.
    pub poisoned: bool,
    /// `${...}` was already expanded in this string.
    pub interpolated: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub key_loc: Loc,
    pub node: Node,
}

impl Node {
    pub fn new(value: Value, loc: Loc) -> Self {
        Node {
            value,
            loc,
            poisoned: false,
            interpolated: false,
        }
    }

    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Table(e) => Some(e),
            _ => None,
        }
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().find(|e| e.key == key)
    }

    /// The node at a path of table keys.
    pub fn get(&self, path: &[&str]) -> Option<&Node> {
        path.iter()
            .try_fold(self, |node, key| node.entry(key).map(|e| &e.node))
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// "a string", "an integer", ...: for "expected X, found Y".
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }

    /// The tree as JSON (tests compare merged trees with it). Non-finite floats become null.
    #[cfg(test)]
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::String(s) | Value::Datetime(s) => J::String(s.clone()),
            Value::Integer(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Boolean(b) => J::Bool(*b),
            Value::Array(a) => J::Array(a.iter().map(Node::to_json).collect()),
            Value::Table(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.node.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A dotted key path for messages: `health.timeout`, `notify[0].url`, `app.env."A.B"`.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let col = match text.get(line_start..offset) {
        Some(s) => s.chars().count() + 1,
        None => offset - line_start + 1,
    };
    (line, col)
}

/// Builds located errors against a set of sources.
pub(crate) struct Errors<'a> {
    pub sources: &'a [Source],
    pub list: Vec<ConfigError>,
}

impl<'a> Errors<'a> {
    pub fn new(sources: &'a [Source]) -> Self {
        Errors {
            sources,
            list: Vec::new(),
        }
    }

    pub fn push(&mut self, loc: Loc, key: &str, message: String, hint: Option<String>) {
        self.list
            .push(make_error(self.sources, loc, key, message, hint));
    }
}

pub(crate) fn make_error(
    sources: &[Source],
    loc: Loc,
    key: &str,
    message: String,
    hint: Option<String>,
) -> ConfigError {
    let source = sources.get(loc.file);
    let (line, col) = match (source, loc.offset) {
        (Some(s), Some(offset)) => line_col(&s.text, offset),
        _ => (0, 0),
    };
    ConfigError {
        file: source.map(|s| s.display.clone()).unwrap_or_default(),
        line,
        col,
        key: key.to_owned(),
        message,
        hint,
    }
}

/// Parses one TOML file into a located tree.
pub(crate) fn parse(sources: &[Source], file: usize) -> Result<Node, ConfigError> {
    let text = &sources[file].text;
    let doc = toml_edit::Document::parse(text.as_str()).map_err(|e| {
        let loc = Loc {
            file,
            offset: Some(e.span().map_or(0, |s| s.start)),
        };
        make_error(sources, loc, "", e.message().trim().to_owned(), None)
    })?;
    Ok(Node::new(
        Value::Table(table_entries(doc.as_table(), file)),
        Loc::file_level(file),
    ))
}

fn loc_of(file: usize, span: Option<std::ops::Range<usize>>) -> Loc {
    Loc {
        file,
        offset: span.map(|s| s.start),
    }
}

fn table_entries(table: &toml_edit::Table, file: usize) -> Vec<Entry> {
    table
        .iter()
        .filter_map(|(k, item)| {
            let key_loc = loc_of(file, table.key(k).and_then(|k| k.span()));
            let node = item_node(item, file, key_loc)?;
            Some(Entry {
                key: k.to_owned(),
                key_loc,
                node,
            })
        })
        .collect()
}

fn item_node(item: &toml_edit::Item, file: usize, key_loc: Loc) -> Option<Node> {
    use toml_edit::Item;
    Some(match item {
        Item::None => return None,
        Item::Value(v) => value_node(v, file),
        Item::Table(t) => Node::new(
            Value::Table(table_entries(t, file)),
            fallback(loc_of(file, t.span()), key_loc),
        ),
        Item::ArrayOfTables(a) => Node::new(
            Value::Array(
                a.iter()
                    .map(|t| {
                        Node::new(
                            Value::Table(table_entries(t, file)),
                            fallback(loc_of(file, t.span()), key_loc),
                        )
                    })
                    .collect(),
            ),
            key_loc,
        ),
    })
}

fn fallback(loc: Loc, other: Loc) -> Loc {
    if loc.offset.is_some() { loc } else { other }
}

fn value_node(v: &toml_edit::Value, file: usize) -> Node {
    use toml_edit::Value as V;
    let loc = loc_of(file, v.span());
    let value = match v {
        V::String(s) => Value::String(s.value().clone()),
        V::Integer(i) => Value::Integer(*i.value()),
        V::Float(f) => Value::Float(*f.value()),
        V::Boolean(b) => Value::Boolean(*b.value()),
        V::Datetime(d) => Value::Datetime(d.value().to_string()),
        V::Array(a) => Value::Array(a.iter().map(|v| value_node(v, file)).collect()),
        V::InlineTable(t) => Value::Table(
            t.iter()
                .map(|(k, v)| {
                    let key_loc = loc_of(file, t.key(k).and_then(|k| k.span()));
                    Entry {
                        key: k.to_owned(),
                        key_loc,
                        node: match v {
                            // Dotted keys inside an inline table make implicit sub-tables.
                            V::InlineTable(_) | V::Array(_) => {
                                let mut n = value_node(v, file);
                                n.loc = fallback(n.loc, key_loc);
                                n
                            }
                            _ => value_node(v, file),
                        },
                    }
                })
                .collect(),
        ),
    };
    Node::new(value, loc)
}

/// Deep merge: tables merge key by key; anything else in `overlay` (scalars, arrays, arrays of
/// tables) replaces the base value whole, keeping the overlay's location.
pub(crate) fn merge(base: &mut Node, overlay: Node) {
    let Value::Table(over_entries) = overlay.value else {
        *base = overlay;
        return;
    };
    let Value::Table(base_entries) = &mut base.value else {
        *base = Node::new(Value::Table(over_entries), overlay.loc);
        return;
    };
    for over in over_entries {
        match base_entries.iter_mut().find(|e| e.key == over.key) {
            Some(existing) => {
                let both_tables = matches!(existing.node.value, Value::Table(_))
                    && matches!(over.node.value, Value::Table(_));
                if both_tables {
                    merge(&mut existing.node, over.node);
                } else {
                    *existing = over;
                }
            }
            None => base_entries.push(over),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(texts: &[&str]) -> Vec<Source> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| Source {
                display: format!("f{i}.toml"),
                text: (*t).to_owned(),
            })
            .collect()
    }

    #[test]
    fn line_col_counts_characters() {
        let text = "ab\nçé = 1\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 1));
        // `=` comes after two 2-byte characters and a space.
        assert_eq!(line_col(text, text.find('=').unwrap()), (2, 4));
        assert_eq!(line_col(text, 1000), (3, 1));
    }

    #[test]
    fn keys_and_values_are_located() {
        let src = sources(&["[app]\nname = \"web\"\nenv = { A = \"1\" }\n"]);
        let root = parse(&src, 0).unwrap();
        let app = root.entry("app").unwrap();
        assert_eq!(line_col(&src[0].text, app.key_loc.offset.unwrap()), (1, 2));
        let name = app.node.entry("name").unwrap();
        assert_eq!(line_col(&src[0].text, name.key_loc.offset.unwrap()), (2, 1));
        assert_eq!(
            line_col(&src[0].text, name.node.loc.offset.unwrap()),
            (2, 8)
        );
        let a = root.get(&["app", "env", "A"]).unwrap();
        assert_eq!(line_col(&src[0].text, a.loc.offset.unwrap()), (3, 13));
    }

    #[test]
    fn merge_tables_deep_and_replace_the_rest() {
        let src = sources(&[
            "[a]\nx = 1\nlist = [1, 2]\n[a.b]\ny = 1\nz = 1\n",
            "[a]\nlist = [3]\n[a.b]\nz = 2\n",
        ]);
        let mut base = parse(&src, 0).unwrap();
        merge(&mut base, parse(&src, 1).unwrap());
        let json = base.to_json();
        assert_eq!(
            json,
            serde_json::json!({"a": {"x": 1, "list": [3], "b": {"y": 1, "z": 2}}})
        );
        // The replaced value points into the overlay.
        assert_eq!(base.get(&["a", "b", "z"]).unwrap().loc.file, 1);
        assert_eq!(base.get(&["a", "b", "y"]).unwrap().loc.file, 0);
    }

    #[test]
    fn join_key_quotes_when_needed() {
        assert_eq!(join_key("", "app"), "app");
        assert_eq!(join_key("app.env", "A.B"), "app.env.\"A.B\"");
        assert_eq!(join_key("notify[0]", "url"), "notify[0].url");
    }
}
