//! The model of a generated TOML document (items, values, string styles) and its renderer: what
//! the strategies build and the loader reads.

/// How a string is written in TOML.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Style {
    Basic,
    Literal,
    MultiBasic,
    MultiLiteral,
}

#[derive(Debug, Clone)]
pub(crate) enum V {
    Str(String, Style),
    /// Integers and floats as written (`0x1F`, `nan`, `1_000`, ...).
    Num(String),
    Bool(bool),
    Datetime(&'static str),
    Array(Vec<V>),
    Inline(Vec<(Vec<String>, V)>),
}

#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// `key = value` under `[table]` (or at the root when `table` is empty).
    Header {
        table: Vec<String>,
        key: Vec<String>,
        value: V,
    },
    /// `table.key = value` at the root.
    Dotted { key: Vec<String>, value: V },
    /// `[[table]]` with its entries.
    ArrayOfTables {
        table: Vec<String>,
        entries: Vec<(Vec<String>, V)>,
    },
}

pub(crate) fn render_key_part(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { k.to_owned() } else { basic_string(k) }
}

pub(crate) fn render_key(parts: &[String]) -> String {
    parts
        .iter()
        .map(|p| render_key_part(p))
        .collect::<Vec<_>>()
        .join(".")
}

pub(crate) fn basic_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn render_string(s: &str, style: Style) -> String {
    let plain = |extra_ok: &dyn Fn(char) -> bool| {
        s.chars()
            .all(|c| (!c.is_control() || c == '\t' || extra_ok(c)) && c != '\'')
    };
    match style {
        Style::Literal if plain(&|_| false) => format!("'{s}'"),
        Style::MultiLiteral if plain(&|c| c == '\n') && !s.ends_with('\n') => {
            format!("'''{s}'''")
        }
        Style::MultiBasic => {
            let mut body = String::new();
            for c in s.chars() {
                match c {
                    '"' => body.push_str("\\\""),
                    '\\' => body.push_str("\\\\"),
                    '\n' | '\t' => body.push(c),
                    c if c.is_control() => body.push_str(&format!("\\u{:04X}", c as u32)),
                    c => body.push(c),
                }
            }
            format!("\"\"\"{body}\"\"\"")
        }
        _ => basic_string(s),
    }
}

pub(crate) fn render_value(v: &V) -> String {
    match v {
        V::Str(s, style) => render_string(s, *style),
        V::Num(n) => n.clone(),
        V::Bool(b) => b.to_string(),
        V::Datetime(d) => (*d).to_owned(),
        V::Array(items) => {
            let inner: Vec<String> = items.iter().map(render_value).collect();
            format!("[{}]", inner.join(", "))
        }
        V::Inline(entries) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{} = {}", render_key(k), render_value(v)))
                .collect();
            format!("{{ {} }}", inner.join(", "))
        }
    }
}

/// TOML text of a document: root-level entries first, then `[table]` sections in order of
/// first appearance, then arrays of tables.
pub(crate) fn render(items: &[Item]) -> String {
    let mut root = Vec::new();
    let mut sections: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    let mut aots = Vec::new();
    for item in items {
        match item {
            Item::Header { table, key, value } if table.is_empty() => {
                root.push(format!("{} = {}", render_key(key), render_value(value)));
            }
            Item::Header { table, key, value } => {
                let line = format!("{} = {}", render_key(key), render_value(value));
                match sections.iter_mut().find(|(t, _)| t == table) {
                    Some((_, lines)) => lines.push(line),
                    None => sections.push((table.clone(), vec![line])),
                }
            }
            Item::Dotted { key, value } => {
                root.push(format!("{} = {}", render_key(key), render_value(value)));
            }
            Item::ArrayOfTables { table, entries } => {
                let mut text = format!("[[{}]]\n", render_key(table));
                for (k, v) in entries {
                    text.push_str(&format!("{} = {}\n", render_key(k), render_value(v)));
                }
                aots.push(text);
            }
        }
    }
    let mut out = String::new();
    for line in root {
        out.push_str(&line);
        out.push('\n');
    }
    for (table, lines) in sections {
        out.push_str(&format!("\n[{}]\n", render_key(&table)));
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    for text in aots {
        out.push('\n');
        out.push_str(&text);
    }
    out
}
