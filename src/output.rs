//! Output written as it is produced: a JSON array an element at a time, byte for byte what serde_json
//! writes for the whole array (pretty-printed at some depth, or compact). A report, an export or an API
//! page of any size is then one valid JSON document while only one element is held at a time. Used by
//! the report, the export and the API; depends on nothing of the crate.

use serde::Serialize;
use std::io::{self, Write};

/// Indentation of serde_json's pretty printer, per level.
const INDENT: &[u8] = b"  ";

/// A JSON array being written, an element at a time.
pub struct JsonArray {
    /// Pretty-printed, the array itself at this depth (its elements one deeper); `None`: compact.
    depth: Option<usize>,
    len: u64,
    /// One element, serialized before it is indented and written.
    buf: Vec<u8>,
}

impl JsonArray {
    /// An array pretty-printed as serde_json's `to_writer_pretty` prints it at `depth` (0: the document
    /// itself; 1: the value of a field of the document's object).
    pub fn pretty(depth: usize) -> Self {
        Self {
            depth: Some(depth),
            len: 0,
            buf: Vec::new(),
        }
    }

    /// An array written as serde_json's `to_writer` writes it.
    pub fn compact() -> Self {
        Self {
            depth: None,
            len: 0,
            buf: Vec::new(),
        }
    }

    /// Elements written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the opening bracket.
    pub fn open(&mut self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(b"[")
    }

    /// Writes one element.
    pub fn push(&mut self, w: &mut impl Write, item: &impl Serialize) -> io::Result<()> {
        let Some(depth) = self.depth else {
            if self.len > 0 {
                w.write_all(b",")?;
            }
            self.len += 1;
            return serde_json::to_writer(&mut *w, item).map_err(io::Error::from);
        };
        self.buf.clear();
        serde_json::to_writer_pretty(&mut self.buf, item)?;
        w.write_all(if self.len == 0 { b"\n" } else { b",\n" })?;
        indent(w, depth + 1)?;
        // Every line break of the element's own printing (a JSON string escapes its line breaks, so
        // these are all formatting) takes the element's depth.
        let mut lines = self.buf.split(|b| *b == b'\n');
        if let Some(first) = lines.next() {
            w.write_all(first)?;
        }
        for line in lines {
            w.write_all(b"\n")?;
            indent(w, depth + 1)?;
            w.write_all(line)?;
        }
        self.len += 1;
        Ok(())
    }

    /// Writes the closing bracket.
    pub fn close(self, w: &mut impl Write) -> io::Result<()> {
        match self.depth {
            Some(depth) if self.len > 0 => {
                w.write_all(b"\n")?;
                indent(w, depth)?;
                w.write_all(b"]")
            }
            _ => w.write_all(b"]"),
        }
    }
}

fn indent(w: &mut impl Write, depth: usize) -> io::Result<()> {
    for _ in 0..depth {
        w.write_all(INDENT)?;
    }
    Ok(())
}

/// The pretty-printed `head` object, open for one more field: its printing without the closing line
/// break and brace, then `,\n  "<field>": `. The caller writes the field's value (at depth 1) and then
/// [`close_object`]. `head` must have at least one field.
pub fn open_object_field(w: &mut impl Write, head: &impl Serialize, field: &str) -> io::Result<()> {
    let text = serde_json::to_vec_pretty(head)?;
    let body = text
        .strip_suffix(b"\n}")
        .ok_or_else(|| io::Error::other("not a pretty-printed object with fields"))?;
    w.write_all(body)?;
    w.write_all(b",\n")?;
    indent(w, 1)?;
    serde_json::to_writer(&mut *w, field)?;
    w.write_all(b": ")
}

/// Closes an object opened with [`open_object_field`].
pub fn close_object(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"\n}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items() -> Vec<serde_json::Value> {
        vec![
            json!({"a": 1, "b": {"c": [1, 2], "d": []}, "e": "line\nbreak", "f": {}}),
            json!([]),
            json!({"g": [{"h": null}]}),
        ]
    }

    #[test]
    fn an_array_written_element_by_element_is_what_serde_json_writes_whole() {
        for n in 0..=3 {
            let items = &items()[..n];
            let mut out = Vec::new();
            let mut a = JsonArray::pretty(0);
            a.open(&mut out).expect("open");
            for i in items {
                a.push(&mut out, i).expect("push");
            }
            a.close(&mut out).expect("close");
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                serde_json::to_string_pretty(items).expect("json"),
                "{n} items, pretty"
            );
            let mut out = Vec::new();
            let mut a = JsonArray::compact();
            a.open(&mut out).expect("open");
            for i in items {
                a.push(&mut out, i).expect("push");
            }
            a.close(&mut out).expect("close");
            assert_eq!(out, serde_json::to_vec(items).expect("json"), "{n} compact");
        }
    }

    #[test]
    fn an_array_as_the_last_field_of_an_object_is_what_serde_json_writes_whole() {
        #[derive(Serialize)]
        struct Head {
            x: u32,
            y: serde_json::Value,
        }
        #[derive(Serialize)]
        struct Whole {
            x: u32,
            y: serde_json::Value,
            items: Vec<serde_json::Value>,
        }
        for n in 0..=3 {
            let items = items()[..n].to_vec();
            let mut out = Vec::new();
            let head = Head {
                x: 1,
                y: json!({"z": [true]}),
            };
            open_object_field(&mut out, &head, "items").expect("head");
            let mut a = JsonArray::pretty(1);
            a.open(&mut out).expect("open");
            for i in &items {
                a.push(&mut out, i).expect("push");
            }
            a.close(&mut out).expect("close");
            close_object(&mut out).expect("close");
            let whole = Whole {
                x: head.x,
                y: head.y,
                items,
            };
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                serde_json::to_string_pretty(&whole).expect("json"),
                "{n} items"
            );
        }
    }
}
