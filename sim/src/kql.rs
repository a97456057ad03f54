//! A small interpreter for the subset of the Kusto query language that Resource Graph queries of this
//! kind use: a table, then `where`, `project`, `order by` / `sort by`, `take` / `limit`, with
//! `and` / `or` / `not(...)`, `==`, `!=`, `=~`, `!~`, `in`, `in~`, `!in`, `!in~`, `contains`, and
//! `tostring`, `tolower`, `toupper`, `isempty`, `isnotempty`, `isnull`, `isnotnull`, `iff`.
//! Anything else is a parse error, which the simulator answers as Resource Graph does an invalid query
//! (400 `BadRequest` with an `InvalidQuery` detail): it never pretends to understand a query.
//!
//! Semantics follow the KQL reference (ARG-QL: `=~` and `in~` compare case-insensitively; `==` and
//! `in` case-sensitively; a dynamic property that does not exist is null).

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Sym(&'static str),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let (tok, next) = if c == '\'' || c == '"' {
            lex_string(&chars, i)?
        } else if c.is_ascii_digit() {
            lex_number(&chars, i)?
        } else if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            lex_word(&chars, i)
        } else {
            lex_symbol(&chars, i)?
        };
        out.push(tok);
        i = next;
    }
    Ok(out)
}

/// The string literal whose quote is at `chars[i]`, and where the text after it starts.
fn lex_string(chars: &[char], mut i: usize) -> Result<(Tok, usize), String> {
    let q = chars[i];
    let mut s = String::new();
    i += 1;
    loop {
        let Some(&d) = chars.get(i) else {
            return Err("unterminated string literal".into());
        };
        i += 1;
        if d == '\\' {
            let Some(&e) = chars.get(i) else {
                return Err("unterminated escape".into());
            };
            i += 1;
            s.push(match e {
                'n' => '\n',
                't' => '\t',
                other => other,
            });
        } else if d == q {
            break;
        } else {
            s.push(d);
        }
    }
    Ok((Tok::Str(s), i))
}

/// The number starting at `chars[i]`, and where the text after it starts.
fn lex_number(chars: &[char], start: usize) -> Result<(Tok, usize), String> {
    let mut i = start;
    while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
        i += 1;
    }
    let text: String = chars[start..i].iter().collect();
    let n = text.parse().map_err(|_| format!("bad number {text}"))?;
    Ok((Tok::Num(n), i))
}

/// The identifier starting at `chars[i]` (or the operator `in~`), and where the text after it starts.
fn lex_word(chars: &[char], start: usize) -> (Tok, usize) {
    let mut i = start;
    while i < chars.len()
        && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '$')
    {
        i += 1;
    }
    let word: String = chars[start..i].iter().collect();
    // `in~` and `!in~` are single operators.
    if word == "in" && chars.get(i) == Some(&'~') {
        (Tok::Sym("in~"), i + 1)
    } else {
        (Tok::Ident(word), i)
    }
}

/// The operator or punctuation at `chars[i]`, and where the text after it starts.
fn lex_symbol(chars: &[char], i: usize) -> Result<(Tok, usize), String> {
    let c = chars[i];
    let rest: String = chars[i..(i + 4).min(chars.len())].iter().collect();
    let word_follows = |at: usize| chars.get(at).is_some_and(|c| c.is_ascii_alphanumeric());
    let (sym, width): (&'static str, usize) = if rest.starts_with("!in~") {
        ("!in~", 4)
    } else if rest.starts_with("!in") && !word_follows(i + 3) {
        ("!in", 3)
    } else if rest.starts_with("==") {
        ("==", 2)
    } else if rest.starts_with("!=") || rest.starts_with("<>") {
        ("!=", 2)
    } else if rest.starts_with("=~") {
        ("=~", 2)
    } else if rest.starts_with("!~") {
        ("!~", 2)
    } else {
        match c {
            '|' => ("|", 1),
            '(' => ("(", 1),
            ')' => (")", 1),
            ',' => (",", 1),
            '.' => (".", 1),
            '=' => ("=", 1),
            _ => return Err(format!("unexpected character {c:?}")),
        }
    };
    Ok((Tok::Sym(sym), i + width))
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(Value),
    Path(Vec<String>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(&'static str, Box<Expr>, Box<Expr>),
    In {
        negate: bool,
        ci: bool,
        lhs: Box<Expr>,
        list: Vec<Expr>,
    },
    Call(String, Vec<Expr>),
}

#[derive(Debug, Clone)]
enum Op {
    Where(Expr),
    Project(Vec<(String, Expr)>),
    Order(String, bool),
    Take(usize),
}

/// A parsed query.
#[derive(Debug, Clone)]
pub struct Query {
    pub table: String,
    ops: Vec<Op>,
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        if self.peek() == Some(&Tok::Sym(leak(s))) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_sym(&mut self, s: &str) -> Result<(), String> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(format!("expected {s:?} at token {}", self.pos))
        }
    }
    fn eat_word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(x)) if x == w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(s)) => Ok(s),
            other => Err(format!("expected a name, found {other:?}")),
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut lhs = self.and()?;
        while self.eat_word("or") {
            lhs = Expr::Or(Box::new(lhs), Box::new(self.and()?));
        }
        Ok(lhs)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut lhs = self.cmp()?;
        while self.eat_word("and") {
            lhs = Expr::And(Box::new(lhs), Box::new(self.cmp()?));
        }
        Ok(lhs)
    }
    fn cmp(&mut self) -> Result<Expr, String> {
        let lhs = self.primary()?;
        for op in ["==", "!=", "=~", "!~"] {
            if self.eat_sym(op) {
                let rhs = self.primary()?;
                return Ok(Expr::Cmp(leak(op), Box::new(lhs), Box::new(rhs)));
            }
        }
        if self.eat_word("contains") {
            let rhs = self.primary()?;
            return Ok(Expr::Cmp("contains", Box::new(lhs), Box::new(rhs)));
        }
        let in_op = if self.eat_sym("in~") {
            Some((false, true))
        } else if self.eat_sym("!in~") {
            Some((true, true))
        } else if self.eat_sym("!in") {
            Some((true, false))
        } else if self.eat_word("in") {
            Some((false, false))
        } else {
            None
        };
        if let Some((negate, ci)) = in_op {
            self.expect_sym("(")?;
            let mut list = vec![self.primary()?];
            while self.eat_sym(",") {
                list.push(self.primary()?);
            }
            self.expect_sym(")")?;
            return Ok(Expr::In {
                negate,
                ci,
                lhs: Box::new(lhs),
                list,
            });
        }
        Ok(lhs)
    }
    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Expr::Lit(Value::String(s))),
            Some(Tok::Num(n)) => Ok(Expr::Lit(serde_json::json!(n))),
            Some(Tok::Sym("(")) => {
                let e = self.expr()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Some(Tok::Ident(name)) => {
                if name == "true" || name == "false" {
                    return Ok(Expr::Lit(Value::Bool(name == "true")));
                }
                if self.eat_sym("(") {
                    let mut args = Vec::new();
                    if !self.eat_sym(")") {
                        args.push(self.expr()?);
                        while self.eat_sym(",") {
                            args.push(self.expr()?);
                        }
                        self.expect_sym(")")?;
                    }
                    let known = [
                        "tostring",
                        "tolower",
                        "toupper",
                        "isempty",
                        "isnotempty",
                        "isnull",
                        "isnotnull",
                        "iff",
                        "iif",
                        "not",
                    ];
                    if !known.contains(&name.as_str()) {
                        return Err(format!("unknown function {name}"));
                    }
                    if name == "not" {
                        let [a] =
                            <[Expr; 1]>::try_from(args).map_err(|_| "not() takes one argument")?;
                        return Ok(Expr::Not(Box::new(a)));
                    }
                    return Ok(Expr::Call(name, args));
                }
                let mut path = vec![name];
                while self.eat_sym(".") {
                    path.push(self.ident()?);
                }
                Ok(Expr::Path(path))
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

/// Symbols are a closed set; map a `&str` onto the static one the lexer produced.
fn leak(s: &str) -> &'static str {
    const ALL: [&str; 14] = [
        "|", "(", ")", ",", ".", "=", "==", "!=", "=~", "!~", "in~", "!in~", "!in", "<>",
    ];
    ALL.iter().find(|x| **x == s).copied().unwrap_or("?")
}

/// Parses a query; errors read like a reason for `InvalidQuery`.
pub fn parse(src: &str) -> Result<Query, String> {
    let toks = lex(src)?;
    let mut p = Parser { toks, pos: 0 };
    let table = p.ident()?;
    let mut ops = Vec::new();
    while p.pos < p.toks.len() {
        p.expect_sym("|")?;
        let kw = p.ident()?;
        match kw.as_str() {
            "where" => ops.push(Op::Where(p.expr()?)),
            "project" => {
                let mut cols = Vec::new();
                loop {
                    let name = p.ident()?;
                    if p.eat_sym("=") {
                        cols.push((name, p.expr()?));
                    } else {
                        let mut path = vec![name.clone()];
                        while p.eat_sym(".") {
                            path.push(p.ident()?);
                        }
                        let col = path.last().cloned().unwrap_or(name);
                        cols.push((col, Expr::Path(path)));
                    }
                    if !p.eat_sym(",") {
                        break;
                    }
                }
                ops.push(Op::Project(cols));
            }
            "order" | "sort" => {
                if !p.eat_word("by") {
                    return Err("expected 'by'".into());
                }
                let col = p.ident()?;
                // KQL sorts descending unless told otherwise.
                let desc = if p.eat_word("asc") {
                    false
                } else {
                    p.eat_word("desc");
                    true
                };
                ops.push(Op::Order(col, desc));
            }
            "take" | "limit" => match p.next() {
                Some(Tok::Num(n)) if n >= 0.0 && n.fract() == 0.0 => ops.push(Op::Take(n as usize)),
                other => return Err(format!("expected a row count, found {other:?}")),
            },
            other => return Err(format!("unsupported operator {other}")),
        }
    }
    Ok(Query { table, ops })
}

fn get_path(row: &Value, path: &[String]) -> Value {
    let mut v = row;
    for (i, seg) in path.iter().enumerate() {
        // Column names are case-sensitive in KQL; dynamic property access too.
        let next = if i == 0 {
            v.get(seg)
        } else {
            v.as_object().and_then(|o| o.get(seg))
        };
        match next {
            Some(n) => v = n,
            None => return Value::Null,
        }
    }
    v.clone()
}

fn to_str(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// [`to_str`] without a copy when the value is a string (sorting compares many).
fn text(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => std::borrow::Cow::Borrowed(s),
        other => std::borrow::Cow::Owned(to_str(other)),
    }
}

fn truthy(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

fn eval(e: &Expr, row: &Value) -> Result<Value, String> {
    Ok(match e {
        Expr::Lit(v) => v.clone(),
        Expr::Path(p) => get_path(row, p),
        Expr::Not(a) => Value::Bool(!truthy(&eval(a, row)?)),
        Expr::And(a, b) => Value::Bool(truthy(&eval(a, row)?) && truthy(&eval(b, row)?)),
        Expr::Or(a, b) => Value::Bool(truthy(&eval(a, row)?) || truthy(&eval(b, row)?)),
        Expr::Cmp(op, a, b) => {
            let (a, b) = (eval(a, row)?, eval(b, row)?);
            let (sa, sb) = (to_str(&a), to_str(&b));
            Value::Bool(match *op {
                "==" => a == b || (a.is_string() && sa == sb),
                "!=" => !(a == b || (a.is_string() && sa == sb)),
                "=~" => sa.eq_ignore_ascii_case(&sb),
                "!~" => !sa.eq_ignore_ascii_case(&sb),
                "contains" => sa.to_ascii_lowercase().contains(&sb.to_ascii_lowercase()),
                _ => return Err(format!("operator {op}")),
            })
        }
        Expr::In {
            negate,
            ci,
            lhs,
            list,
        } => {
            let l = to_str(&eval(lhs, row)?);
            let mut hit = false;
            for item in list {
                let r = to_str(&eval(item, row)?);
                if (*ci && l.eq_ignore_ascii_case(&r)) || (!*ci && l == r) {
                    hit = true;
                    break;
                }
            }
            Value::Bool(hit != *negate)
        }
        Expr::Call(name, args) => {
            let arg = |i: usize| -> Result<Value, String> {
                args.get(i)
                    .map(|a| eval(a, row))
                    .unwrap_or_else(|| Err(format!("{name}() needs argument {}", i + 1)))
            };
            match name.as_str() {
                "tostring" => Value::String(to_str(&arg(0)?)),
                "tolower" => Value::String(to_str(&arg(0)?).to_lowercase()),
                "toupper" => Value::String(to_str(&arg(0)?).to_uppercase()),
                "isempty" => {
                    Value::Bool(matches!(arg(0)?, Value::Null) || to_str(&arg(0)?).is_empty())
                }
                "isnotempty" => {
                    Value::Bool(!(matches!(arg(0)?, Value::Null) || to_str(&arg(0)?).is_empty()))
                }
                "isnull" => Value::Bool(arg(0)?.is_null()),
                "isnotnull" => Value::Bool(!arg(0)?.is_null()),
                "iff" | "iif" => {
                    if truthy(&arg(0)?) {
                        arg(1)?
                    } else {
                        arg(2)?
                    }
                }
                other => return Err(format!("unknown function {other}")),
            }
        }
    })
}

/// The row `project` makes of `row`.
fn project(cols: &[(String, Expr)], row: &Value) -> Result<Value, String> {
    let mut m = Map::new();
    for (name, e) in cols {
        m.insert(name.clone(), eval(e, row)?);
    }
    Ok(Value::Object(m))
}

impl Query {
    /// Runs the query over `rows` (objects). Errors are evaluation errors (`InvalidQuery`).
    pub fn run(&self, rows: impl Iterator<Item = Value>) -> Result<Vec<Value>, String> {
        let mut data: Vec<Value> = Vec::new();
        // The operators that look at one row at a time (filters, projections) first, streaming, so only
        // the rows kept, as projected, are held; then the rest on the materialised set.
        let streamed = self
            .ops
            .iter()
            .position(|op| !matches!(op, Op::Where(_) | Op::Project(_)))
            .unwrap_or(self.ops.len());
        'rows: for mut row in rows {
            for op in &self.ops[..streamed] {
                match op {
                    Op::Where(e) => {
                        if !truthy(&eval(e, &row)?) {
                            continue 'rows;
                        }
                    }
                    Op::Project(cols) => row = project(cols, &row)?,
                    Op::Order(..) | Op::Take(_) => {}
                }
            }
            data.push(row);
        }
        for op in &self.ops[streamed..] {
            match op {
                Op::Where(e) => {
                    let mut kept = Vec::with_capacity(data.len());
                    for r in data {
                        if truthy(&eval(e, &r)?) {
                            kept.push(r);
                        }
                    }
                    data = kept;
                }
                Op::Project(cols) => {
                    data = data
                        .iter()
                        .map(|r| project(cols, r))
                        .collect::<Result<_, _>>()?;
                }
                Op::Order(col, desc) => {
                    data.sort_by(|a, b| {
                        let o = text(&a[col]).cmp(&text(&b[col]));
                        if *desc { o.reverse() } else { o }
                    });
                }
                Op::Take(n) => data.truncate(*n),
            }
        }
        Ok(data)
    }

    /// Whether the result can be paged: `take`/`limit` results carry no `$skipToken` (ARG paging-results).
    pub fn pageable(&self) -> bool {
        !self.ops.iter().any(|o| matches!(o, Op::Take(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows() -> Vec<Value> {
        vec![
            json!({"id":"/S/b","type":"microsoft.compute/virtualmachines","identity":{"principalId":"p1"},"properties":{}}),
            json!({"id":"/S/a","type":"microsoft.managedidentity/userassignedidentities","identity":null,"properties":{"principalId":"p2"}}),
            json!({"id":"/S/c","type":"microsoft.storage/storageaccounts","identity":null,"properties":{}}),
        ]
    }

    #[test]
    fn filters_by_type_list_case_insensitively_and_projects() {
        let q = parse("Resources | where type in~ ('Microsoft.Compute/virtualMachines', 'microsoft.managedidentity/userassignedidentities') | project id, type, identityPrincipalId = tostring(identity.principalId), propertiesPrincipalId = tostring(properties.principalId) | order by id asc").expect("parses");
        let out = q.run(rows().into_iter()).expect("runs");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["id"], "/S/a");
        assert_eq!(out[0]["propertiesPrincipalId"], "p2");
        assert_eq!(out[0]["identityPrincipalId"], "");
        assert_eq!(out[1]["identityPrincipalId"], "p1");
    }

    #[test]
    fn boolean_logic_and_functions() {
        let q = parse("Resources | where isnotempty(identity) or type =~ 'MICROSOFT.STORAGE/STORAGEACCOUNTS' | where not(id == '/S/b')").expect("parses");
        let out = q.run(rows().into_iter()).expect("runs");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["id"], "/S/c");
        let q = parse("Resources | where id !in~ ('/s/A') | order by id desc | take 1")
            .expect("parses");
        let out = q.run(rows().into_iter()).expect("runs");
        assert_eq!(out[0]["id"], "/S/c");
        assert!(!q.pageable());
    }

    #[test]
    fn case_sensitive_operators_are_case_sensitive() {
        let q = parse("Resources | where id in ('/s/a')").expect("parses");
        assert!(q.run(rows().into_iter()).expect("runs").is_empty());
        let q = parse("Resources | where id == '/S/a'").expect("parses");
        assert_eq!(q.run(rows().into_iter()).expect("runs").len(), 1);
    }

    #[test]
    fn anything_unsupported_is_an_error() {
        for bad in [
            "Resources | summarize count()",
            "Resources | where id in~ ('a'",
            "Resources | where bag_keys(identity)",
            "Resources | where id == 'unterminated",
            "Resources | mv-expand x",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
