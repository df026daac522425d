//! The subset of YAML that `action.yml` and the example workflows are written in: block mappings,
//! block sequences (`- key: value`), plain and quoted scalars, literal (`|`) and folded (`>`)
//! block scalars, comment lines. Flow collections (`[main]`, `{ a: b }`) stay scalars (their
//! text). Anything else panics, so a file that leaves the subset fails the tests loudly instead
//! of being misread.

use std::ops::Index;

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Scalar(String),
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
}

static NULL: Node = Node::Null;

impl Node {
    /// A scalar's text; "" for anything else.
    pub fn str(&self) -> &str {
        match self {
            Node::Scalar(s) => s,
            _ => "",
        }
    }

    pub fn map(&self) -> &[(String, Node)] {
        match self {
            Node::Map(m) => m,
            _ => &[],
        }
    }

    pub fn seq(&self) -> &[Node] {
        match self {
            Node::Seq(s) => s,
            _ => &[],
        }
    }

    /// Every scalar under this node with its dotted path (starting with `prefix`).
    pub fn leaves(&self, prefix: &str) -> Vec<(String, String)> {
        match self {
            Node::Null => Vec::new(),
            Node::Scalar(s) => vec![(prefix.to_string(), s.clone())],
            Node::Map(m) => m
                .iter()
                .flat_map(|(k, v)| v.leaves(&format!("{prefix}.{k}")))
                .collect(),
            Node::Seq(s) => s
                .iter()
                .enumerate()
                .flat_map(|(i, v)| v.leaves(&format!("{prefix}.{i}")))
                .collect(),
        }
    }
}

impl Index<&str> for Node {
    type Output = Node;
    fn index(&self, key: &str) -> &Node {
        self.map()
            .iter()
            .find(|(k, _)| k == key)
            .map_or(&NULL, |(_, v)| v)
    }
}

pub fn parse(text: &str) -> Node {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut at = 0;
    let node = node(&mut lines, &mut at, 0);
    skip_blank(&lines, &mut at);
    assert!(
        at == lines.len(),
        "unparsed YAML from line {}: {:?}",
        at + 1,
        lines[at]
    );
    node
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn insignificant(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

fn skip_blank(lines: &[String], at: &mut usize) {
    while *at < lines.len() && insignificant(&lines[*at]) {
        *at += 1;
    }
}

fn is_item(line: &str) -> bool {
    let t = line.trim_start();
    t == "-" || t.starts_with("- ")
}

/// The node whose first line is the next significant one, at least `min` deep.
fn node(lines: &mut [String], at: &mut usize, min: usize) -> Node {
    skip_blank(lines, at);
    if *at == lines.len() || indent(&lines[*at]) < min {
        return Node::Null;
    }
    let depth = indent(&lines[*at]);
    if is_item(&lines[*at]) {
        let mut items = Vec::new();
        loop {
            skip_blank(lines, at);
            if *at == lines.len() || indent(&lines[*at]) != depth || !is_item(&lines[*at]) {
                break;
            }
            let rest = lines[*at].trim_start()[1..].trim_start().to_string();
            if rest.contains(": ") || rest.ends_with(':') {
                // `- key: value` opens a mapping two columns in: read it as if the dash were
                // a space.
                lines[*at].replace_range(depth..depth + 1, " ");
                items.push(node(lines, at, depth + 1));
            } else {
                *at += 1;
                items.push(Node::Scalar(unquote(&rest)));
            }
        }
        return Node::Seq(items);
    }
    let mut map = Vec::new();
    loop {
        skip_blank(lines, at);
        if *at == lines.len() || indent(&lines[*at]) < depth {
            break;
        }
        let line = lines[*at].clone();
        assert!(
            indent(&line) == depth && !is_item(&line),
            "line {}: unexpected indentation: {line:?}",
            *at + 1
        );
        let (key, value) = line
            .trim()
            .split_once(':')
            .unwrap_or_else(|| panic!("line {}: not `key: value`: {line:?}", *at + 1));
        let (key, value) = (unquote(key.trim()), value.trim());
        *at += 1;
        let child = if value.is_empty() {
            // A nested mapping is deeper; a sequence may sit at the key's own depth.
            skip_blank(lines, at);
            if *at < lines.len() && indent(&lines[*at]) == depth && is_item(&lines[*at]) {
                node(lines, at, depth)
            } else {
                node(lines, at, depth + 1)
            }
        } else if value.starts_with('|') || value.starts_with('>') {
            block(lines, at, depth, value)
        } else {
            Node::Scalar(unquote(value))
        };
        assert!(
            !map.iter().any(|(k, _)| *k == key),
            "duplicate key {key} before line {}",
            *at
        );
        map.push((key, child));
    }
    Node::Map(map)
}

/// A block scalar: the lines deeper than `depth` (and blank lines among them).
fn block(lines: &[String], at: &mut usize, depth: usize, header: &str) -> Node {
    let start = *at;
    while *at < lines.len() && (lines[*at].trim().is_empty() || indent(&lines[*at]) > depth) {
        *at += 1;
    }
    let mut body: Vec<&str> = lines[start..*at].iter().map(String::as_str).collect();
    while body.last().is_some_and(|l| l.trim().is_empty()) {
        body.pop();
    }
    let cut = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent(l))
        .min()
        .unwrap_or(0);
    let body: Vec<&str> = body.iter().map(|l| l.get(cut..).unwrap_or("")).collect();
    let mut text = if header.starts_with('>') {
        body.join(" ")
    } else {
        body.join("\n")
    };
    if !header.ends_with('-') {
        text.push('\n');
    }
    Node::Scalar(text)
}

fn unquote(s: &str) -> String {
    let quoted = |q: char| s.len() >= 2 && s.starts_with(q) && s.ends_with(q);
    if quoted('\'') {
        s[1..s.len() - 1].replace("''", "'")
    } else if quoted('"') {
        s[1..s.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else {
        s.to_string()
    }
}
